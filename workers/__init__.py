"""Everything behind the queue, by role. May import ``ingest``, never the reverse.

- `workers.runtime`: the ``ctwa worker`` service — consuming, batching, retrying, acknowledging, its metrics.
- `workers.engine`: what turns callbacks into rows — the tables, the facts each callback says, and the store that
  writes a batch (archive, projections, erasure, rollups) in one transaction.
- `workers.commands`: a module per ``ctwa`` subcommand, each defining it whole (arguments, help, what it runs): the
  services (receiver, worker) and what an operator runs — migrate, report, simulate, the dead-letter queue, replay,
  prune, conversions.
- `workers.conversions`: the ``ctwa conversions send`` service — the ``conversion_events`` outbox, Meta's API.
- `workers.tools`: the traffic simulator and progress output.
- `workers.cli`: ``ctwa``, the one console script: it assembles the subcommands, each defined by its own module.
"""
