"""Password guessing from many addresses. nginx limits logins per client address; this
limits failed logins from all addresses together, which no number of addresses gets
around.

Up to `allowed` failures within `window_s` are checked; the one that reaches it locks
logins for `first_s`. From then on each failure locks again, twice as long as the last
time (at most `max_s`), until `window_s` passes without a failure after a lock: then
the full allowance is back. A try while locked is refused (429 with Retry-After) without
checking the password, so it neither counts nor can succeed. A success unlocks nothing:
time alone does. Tries being checked count against the allowance, so a burst cannot
slip past it while scrypt runs.

The state is the API process's own: a restart of the API clears it (the operator's way
out if an attacker keeps the admin locked out; sessions are not affected meanwhile).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

WINDOW_S = 600.0
FIRST_LOCK_S = 30.0
BUSY_RETRY_S = 1.0  # the allowance is taken by tries being checked: ask again soon


@dataclass
class LoginBackoff:
    allowed: int = 10
    max_s: float = 900.0
    window_s: float = WINDOW_S
    first_s: float = FIRST_LOCK_S
    _failures: collections.deque[float] = field(default_factory=collections.deque)
    _locks: int = 0  # locks since the last quiet window
    _until: float = 0.0
    _last: float = float("-inf")  # the last failure
    _checking: int = 0
    _mutex: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, now: float) -> float:
        """Returns 0 and reserves a try (to be closed with `done`), or the seconds to wait
        before trying again (the try is refused)."""
        with self._mutex:
            self._forget(now)
            if now < self._until:
                return self._until - now
            allowance = 1 if self._locks else self.allowed - len(self._failures)
            if self._checking >= allowance:
                return BUSY_RETRY_S
            self._checking += 1
            return 0.0

    def done(self, now: float, *, ok: bool) -> float:
        """Closes a try `admit` let through; a failure counts, and may lock. Returns the
        seconds of the lock it set (0: none)."""
        with self._mutex:
            self._checking -= 1
            if ok:
                return 0.0
            self._failures.append(now)
            self._last = now
            if not self._locks and len(self._failures) < self.allowed:
                return 0.0
            self._locks += 1
            lock_s = float(min(self.max_s, self.first_s * 2 ** (self._locks - 1)))
            self._until = max(self._until, now + lock_s)
            self._failures.clear()
            return lock_s

    def _forget(self, now: float) -> None:
        while self._failures and self._failures[0] <= now - self.window_s:
            self._failures.popleft()
        if self._locks and now - max(self._until, self._last) >= self.window_s:
            self._locks = 0
