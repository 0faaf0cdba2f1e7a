"""A plain-text progress bar on stderr while a run goes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def bar(label: str, stream: TextIO = sys.stderr) -> Callable[[int, int], None]:
    """A callback ``(done, total)`` drawing ``label [#####     ] 50% 1,000/2,000 req/s``.

    On a terminal the line is redrawn in place; otherwise a line is written every tenth."""
    started = time.perf_counter()
    tty = stream.isatty()
    last = [-1]

    def update(done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if not tty and percent // 10 == last[0] // 10 and done < total:
            return
        last[0] = percent
        filled = percent // 4
        rate = done / max(time.perf_counter() - started, 1e-9)
        line = (
            f"{label} [{'#' * filled}{' ' * (25 - filled)}] {percent:3d}% "
            f"{done:,}/{total:,} requests, {rate:,.0f}/s"
        )
        end = "\n" if done >= total or not tty else ""
        stream.write(("\r" if tty else "") + line + end)
        stream.flush()

    return update
