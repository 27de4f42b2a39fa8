# One image for every role: `ctwa receiver`, `ctwa worker`, `ctwa migrate`, `ctwa report`, `ctwa simulate`.
FROM python:3.12-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 --user-group ctwa

# Dependencies first, in a layer of their own: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir ingest workers migrations \
    && touch ingest/__init__.py workers/__init__.py migrations/__init__.py \
    && pip install . \
    && pip uninstall --yes ctwa-ingest \
    && rm -rf ingest workers migrations

COPY ingest ingest
COPY workers workers
COPY migrations migrations
COPY alembic.ini ./
RUN pip install --no-deps .

USER ctwa
EXPOSE 8080 9100
ENTRYPOINT ["ctwa"]
CMD ["receiver"]

# The test suite, for `docker compose run --rm tests`: the same image, the test extras and the tests.
FROM runtime AS test
USER root
RUN pip install ".[test]"
COPY tests tests
COPY bench bench
RUN chown -R ctwa:ctwa /app
USER ctwa
ENTRYPOINT []
CMD ["python", "-m", "pytest"]
