"""Alembic migrations: the only place the database schema changes. Run them with ``ctwa migrate``."""
