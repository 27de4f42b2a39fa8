"""Everything behind the queue, by role. May import ``ingest``, never the reverse.

- `workers.runtime`: the ``ctwa worker`` service — consuming, batching, retrying, acknowledging, its metrics.
- `workers.engine`: what turns callbacks into rows — the tables, the facts each callback says, and the store that
  writes a batch (archive, projections, erasure, rollups) in one transaction.
- `workers.commands`: what an operator runs — migrate, report, replay, prune, the dead-letter queue.
- `workers.tools`: the traffic simulator and progress output.
- `workers.cli`: ``ctwa``, the one console script, a subcommand per job.
"""
