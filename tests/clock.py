"""A clock a test moves by hand, for code that reads the time through a callable."""

from __future__ import annotations

import time


class Clock:
    """Reads ``now``, which the test sets or moves on (wall time when made, by default)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now
