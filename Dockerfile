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

# The test suite, for `docker compose run --rm tests`: the same image, the test lock and the tests.
FROM runtime AS test
USER root
COPY requirements/test.txt requirements/test.txt
RUN pip install --require-hashes -r requirements/test.txt
COPY tests tests
COPY bench bench
RUN chown -R ctwa:ctwa /app
USER ctwa
ENTRYPOINT []
CMD ["python", "-m", "pytest"]
