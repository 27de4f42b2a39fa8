"""Progress of long commands on stderr: a bar at a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``update(done, note)`` as work goes; ``finish(done, note)`` once at the end."""

    def __init__(self, out: TextIO | None, total: int | None, unit: str) -> None:
        self._out = out
        self._total = total
        self._unit = unit
        self._tty = bool(out is not None and out.isatty())
        self._started = time.monotonic()
        self._shown = 0.0

    def update(self, done: int, note: str = "") -> None:
        now = time.monotonic() - self._started
        if self._out is None or now - self._shown < (0.2 if self._tty else 5.0):
            return
        self._shown = now
        self._write(done, note, "\r" if self._tty else "\n")

    def finish(self, done: int, note: str = "") -> None:
        if self._out is not None:
            self._write(done, note, "\n")

    def _write(self, done: int, note: str, end: str) -> None:
        assert self._out is not None
        elapsed = time.monotonic() - self._started
        rate = f"{done / elapsed:,.0f}/s" if elapsed > 0 else ""
        if self._total:
            width = 30
            filled = min(width, int(width * done / self._total))
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {done:,}/{self._total:,} {self._unit}"
        else:
            bar = f"{done:,} {self._unit}"
        self._out.write(f"{bar}  {rate}  {note}".rstrip() + end)
        self._out.flush()
