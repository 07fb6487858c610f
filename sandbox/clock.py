"""Server clock: real (anchor + elapsed × speed) or manual (moves only when told)."""

import time


class Clock:
    def __init__(self, anchor_ms: int, mode: str = "real", speed: float = 1.0):
        if mode not in ("real", "manual"):
            raise ValueError(f"clock mode must be real or manual, not {mode!r}")
        self.anchor = anchor_ms
        self.mode = mode
        self.speed = speed
        self._start = time.monotonic()
        self._manual = anchor_ms

    def now_ms(self) -> int:
        if self.mode == "manual":
            return self._manual
        return self.anchor + int((time.monotonic() - self._start) * 1000 * self.speed)

    def advance(self, ms: int) -> int:
        self._require_manual()
        self._manual += ms
        return self._manual

    def set(self, ms: int) -> int:
        self._require_manual()
        self._manual = ms
        return self._manual

    def _require_manual(self) -> None:
        if self.mode != "manual":
            raise ValueError("the clock is in real mode; start with --clock manual")
