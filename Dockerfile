# One image for every role: `ctwa receiver`, `ctwa worker`, `ctwa migrate`, `ctwa report`, `ctwa simulate`.
FROM python:3.12-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 --user-group ctwa

# Dependencies first, in a layer of their own: the locked versions, each file checked against its hash. The layer
# is rebuilt only when the lock changes.
COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install --require-hashes -r requirements/runtime.txt

COPY pyproject.toml README.md ./
COPY ingest ingest
COPY workers workers
COPY migrations migrations
COPY alembic.ini ./
RUN pip install --no-deps .

USER ctwa
EXPOSE 8080 9100
ENTRYPOINT ["ctwa"]
CMD ["receiver"]

# The test suite, for `docker compose run --rm tests`: the same image, the test lock, the whole project (the tests
# read the compose file, the Dockerfile, the locks, the docs), and what the tests drive besides the services:
# PgBouncer (tests behind a pooler), Chromium and its driver (the dashboard's page), RabbitMQ's server and CLI (a
# three-node cluster of the tests' own; the broker's alarms and policies, on the compose node, with its Erlang
# cookie), promtool (the alert rules). It runs as root: RabbitMQ's wrappers run the nodes as the rabbitmq user.
FROM runtime AS test
USER root
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        pgbouncer chromium chromium-driver rabbitmq-server prometheus \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
COPY requirements/test.txt requirements/test.txt
RUN pip install --require-hashes -r requirements/test.txt
COPY . .
ENV CI=true
ENTRYPOINT []
CMD ["python", "-m", "pytest"]
