"""Every Postgres advisory lock Oculus takes, in one place, so no two uses share an id by
accident. Single keys (bigint) unless said. The `*_CLASS` ids are the class half of
two-int locks, a key space of their own (Postgres tells the two forms apart):
`INGEST_USER_CLASS` for the per-user ingest locks (`db.lock_ingest`, the object half the
followed user's id). A test checks the ids are distinct, the single keys among
themselves and the classes among themselves. One copy of each job (the scheduler and the
listener included) is not a lock but an elected role (`store.leases.Role`), which holds
across hosts and behind a transaction-mode pooler."""

from __future__ import annotations

INGEST_USER_CLASS = 0x6F64  # (class, user id): one user's event / shadow writes (transaction)
MIGRATE = 0x0C01_05  # one migrator at a time (session)
INGEST = 0x0C01_10  # every write to events and the shadow ledger: shared with a user's (tx)
GROUP = 0x6F63_0002  # one grouper at a time (transaction)
EXEC_LEDGER = 0x6F63_0003  # every write to the exec ledgers: simulate, settlement (tx)
SNAPSHOT = 0x6F63_0005  # one snapshot writer (transaction)
ROLLUP = 0x6F63_0006  # one rollup writer (transaction)
CONFIG = 0x6F63_0007  # config writers take turns, so versions differ (transaction)
PRUNE = 0x6F63_0010  # one prune at a time (session)
SIMULATE = 0x6F63_0011  # one copy engine at a time (session)

CLASSES = {"INGEST_USER_CLASS": INGEST_USER_CLASS}  # two-int locks
ALL = {
    name: value
    for name, value in globals().items()
    if name.isupper() and isinstance(value, int) and name not in CLASSES
}
