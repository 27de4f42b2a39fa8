"""``ctwa worker --drain`` with the projections switched off: a diagnostic, not a mode of the product.

It measures what the worker's own machinery — consuming, unpacking batches, decoding, reading each callback's facts,
de-duplicating, archiving, acknowledging — costs without the projection statements, so the benchmark shows where a
full worker's time goes.
Usage: python bench/archive_only_worker.py (settings from the CTWA_* environment, as ``ctwa worker``)
"""

from __future__ import annotations

import sys

from workers.cli import main
from workers.engine.store import Store


async def _archive_only(*args: object, **kwargs: object) -> bool:
    return True  # "written": the store commits the archive alone


if __name__ == "__main__":
    Store.project = _archive_only  # type: ignore[method-assign]
    sys.exit(main(["worker", "--drain"]))
