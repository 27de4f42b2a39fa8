"""What an operator runs besides the services: ``ctwa migrate``, ``report``, ``replay``, ``prune``, ``dlq`` and
``conversions``."""
