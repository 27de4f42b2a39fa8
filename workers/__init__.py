"""The workers: consume callbacks from RabbitMQ and store them in Postgres. May import ``ingest``, never the reverse."""
