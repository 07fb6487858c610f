"""Every Postgres advisory lock Oculus takes, in one place, so no two uses share an id by
accident. Single keys (bigint) unless said; `JOB_CLASS` is the class half of the
two-int per-job locks (`runtime.jobs.try_lock`: one copy of each job, the object half
the crc32 of the job's name). A test checks the ids are distinct."""

from __future__ import annotations

JOB_CLASS = 0x6F63  # (class, crc32(job name)): one copy per job, scheduler included
MIGRATE = 0x0C01_05  # one migrator at a time (session)
INGEST = 0x0C01_10  # every write to events and the shadow ledger (transaction)
GROUP = 0x6F63_0002  # one grouper at a time (transaction)
EXEC_LEDGER = 0x6F63_0003  # every write to the exec ledgers: simulate, settlement (tx)
SNAPSHOT = 0x6F63_0005  # one snapshot writer (transaction)
ROLLUP = 0x6F63_0006  # one rollup writer (transaction)
CONFIG = 0x6F63_0007  # config writers take turns, so versions differ (transaction)
PRUNE = 0x6F63_0010  # one prune at a time (session)
SIMULATE = 0x6F63_0011  # one copy engine at a time (session)

ALL = {
    name: value
    for name, value in globals().items()
    if name.isupper() and isinstance(value, int) and name != "JOB_CLASS"
}
