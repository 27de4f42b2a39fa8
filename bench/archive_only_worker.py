"""``ctwa worker --drain`` with the projections switched off: a diagnostic, not a mode of the product.

It measures what the worker's own machinery — consuming, unpacking batches, decoding, de-duplicating, archiving,
acknowledging — costs without the projection statements, so the benchmark shows where a full worker's time goes.
Usage: python bench/archive_only_worker.py (settings from the CTWA_* environment, as ``ctwa worker``)
"""

from __future__ import annotations

import sys

from workers.cli import main
from workers.engine import projections


async def _skip(*args: object, **kwargs: object) -> None:
    return None


if __name__ == "__main__":
    projections.project = _skip  # type: ignore[assignment]
    sys.exit(main(["worker", "--drain"]))
