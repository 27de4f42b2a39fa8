"""A module per ``ctwa`` subcommand, each defining it whole — arguments, help, what it runs (``command`` says how):
the services ``receiver`` and ``worker``, and what an operator runs — ``migrate``, ``report``, ``simulate``,
``dlq``, ``replay``, ``prune`` and ``conversions``. ``arguments`` holds the types of their arguments, ``output``
how they print rows."""
