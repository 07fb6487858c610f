"""Import the admin's real copy fills of one leader from a CSV (SPEC §10):
`python -m functions.import_copies FILE.csv --copy-of LEADER` (the leader's user id or
wallet).

The header names the columns `timestamp` (ISO 8601 or unix seconds), `tx_hash`, `asset`,
`side`, `price`, `size` and optionally `fee`, in any order (common/domain/copy_csv.py
says what each may hold). UTF-8 with or without a BOM, CRLF or LF line endings.

- A bad row is quarantined (`quarantine`, source `import_copies`) with the file's name,
  its line number and the reason, and the import goes on; a file whose header lacks a
  column is refused whole (exit 2).
- Importing the same file again adds nothing: each fill's key is its fields (and, for
  identical rows in one file, their order), so a re-import, or an overlapping export,
  finds them present. A bad row seen again is counted on its quarantine row.
- On a terminal a progress bar runs on stderr; a summary line ends the run, and the
  import is written to `audit_log` (`copies.import`).

The score job pairs the imported fills with the leader's groups, then attributes and
scores them next to the simulated copy (the leader's page, "Real copy").
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from psycopg.types.json import Jsonb

from common.domain import copy_csv
from common.runtime import jobs, settings
from common.store import db, quarantine, real_copies, users
from common.upstream import wire

SOURCE = "import_copies"
BATCH = 20_000
KEEP_BAD = 1_000  # bad rows kept one by one per import; past that, counted on one row
MAX_LINE = 64 * 1024  # a longer record is refused (csv's own field limit is 128 kB)


@dataclass
class Tally:
    rows: int = 0
    added: int = 0
    blank: int = 0
    bad_lines: list[int] = field(default_factory=list)

    @property
    def present(self) -> int:
        return self.rows - self.added - len(self.bad_lines)


class Lines:
    """The file's lines decoded (bad UTF-8 kept as surrogates, so the row with it is
    refused, not the file), a BOM dropped, and the bytes read so far."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.read = f, 0

    def __iter__(self) -> Iterator[str]:
        first = True
        for raw in self.f:
            self.read += len(raw)
            if first and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            first = False
            yield raw.decode("utf-8", errors="surrogateescape")


class Progress:
    """A one-line bar on stderr when it is a terminal, redrawn at most 5 times a second."""

    def __init__(self, total: int, stream: Any) -> None:
        self.total, self.stream = max(1, total), stream
        self.on = bool(getattr(stream, "isatty", lambda: False)())
        self.start = self.last = time.monotonic()

    def show(self, done: int, rows: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.on or (not final and now - self.last < 0.2):
            return
        self.last = now
        share = min(1.0, done / self.total)
        bar = "#" * int(share * 30)
        rate = rows / max(1e-9, now - self.start)
        self.stream.write(f"\r[{bar:<30}] {share:4.0%} {rows:,} rows {rate:,.0f} rows/s")
        if final:
            self.stream.write("\n")
        self.stream.flush()


def _reject(name: str, line: int, reason: str, fields: list[str], leader: int) -> wire.Reject:
    text = ",".join(fields).encode("utf-8", errors="surrogateescape").decode(errors="replace")
    return wire.Reject(
        source=SOURCE,
        reason=f"{name} line {line}: {reason}",
        payload=f"{name}:{line}: {text}",  # the line is part of the identity: one row each
        context={"file": name, "line": line, "copy_of": leader},
    )


def _flush(
    conn: db.Conn, batch: list[tuple[Any, ...]], bad: list[wire.Reject], now: datetime
) -> int:
    with conn.transaction():
        added = real_copies.import_rows(conn, batch) if batch else 0
        quarantine.record(conn, bad, now, limit=KEEP_BAD, quiet=True)
    batch.clear()
    bad.clear()
    return added


def run(conn: db.Conn, path: Path, leader: int, now: datetime, stderr: Any) -> Tally:
    """Imports `path` as copy fills of `leader`; raises HeaderError for a file that
    cannot be read as the copy CSV."""
    name = path.name
    tally, seen = Tally(), set()
    batch: list[tuple[Any, ...]] = []
    bad: list[wire.Reject] = []
    progress = Progress(path.stat().st_size, stderr)
    csv.field_size_limit(MAX_LINE)
    with path.open("rb") as f:
        lines = Lines(f)
        reader = csv.reader(lines)
        try:
            header = next(reader)
        except StopIteration:
            raise copy_csv.HeaderError("the file is empty: no header") from None
        except csv.Error as exc:
            raise copy_csv.HeaderError(f"the header cannot be read: {exc}") from None
        cols = copy_csv.columns(header)
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                tally.rows += 1
                tally.bad_lines.append(reader.line_num)
                bad.append(_reject(name, reader.line_num, f"not CSV: {exc}", [], leader))
                continue
            if not any(x.strip() for x in fields):
                tally.blank += 1
                continue
            tally.rows += 1
            try:
                r = copy_csv.row(fields, cols, now)
            except copy_csv.BadRow as exc:
                tally.bad_lines.append(reader.line_num)
                bad.append(_reject(name, reader.line_num, str(exc), fields, leader))
                continue
            key, n = r.key, 0
            while (
                digest := hashlib.blake2b(f"{key}#{n}".encode(), digest_size=12).digest()
            ) in seen:
                n += 1
            seen.add(digest)
            batch.append(
                (leader, key if n == 0 else f"{key}#{n}", name, reader.line_num, r.tx_hash,
                 r.asset_id, r.side, r.price, r.size, r.fee, r.at, now)
            )  # fmt: skip
            if len(batch) >= BATCH:
                tally.added += _flush(conn, batch, bad, now)
            progress.show(lines.read, tally.rows)
    tally.added += _flush(conn, batch, bad, now)
    progress.show(lines.read, tally.rows, final=True)
    return tally


def summary(name: str, t: Tally, seconds: float) -> str:
    """The closing line: what was read, added, already present, quarantined (and where)."""
    where = ""
    if t.bad_lines:
        shown = ", ".join(str(n) for n in t.bad_lines[:10])
        more = f" and {len(t.bad_lines) - 10} more" if len(t.bad_lines) > 10 else ""
        where = f" (lines {shown}{more}: see the quarantine)"
    blank = f", {t.blank:,} blank lines skipped" if t.blank else ""
    rate = t.rows / seconds if seconds > 0 else 0
    return (
        f"{name}: {t.rows:,} rows, {t.added:,} added, {t.present:,} already imported,"
        f" {len(t.bad_lines):,} quarantined{where}{blank}; {seconds:.1f} s ({rate:,.0f} rows/s)"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m functions.import_copies",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, help="the CSV file")
    p.add_argument("--copy-of", required=True, metavar="LEADER", help="the leader's id or wallet")
    p.add_argument("--database-url", help="default: DATABASE_URL or the embedded server")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    jobs.setup_logging(settings.get())
    if not args.file.is_file():
        print(f"import_copies: no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        conn = db.connect(args.database_url, autocommit=True)
    except db.DatabaseUnavailable as exc:
        print(f"import_copies: database unavailable: {exc}", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        leader = users.leader_id(conn, args.copy_of)
        users.copy_of_check(conn, 0, leader)
        tally = run(conn, args.file, leader, jobs.utcnow(), sys.stderr)
    except (users.FollowError, copy_csv.HeaderError) as exc:
        print(f"import_copies: {args.file.name}: {exc}", file=sys.stderr)
        conn.close()
        return 2
    line = summary(args.file.name, tally, time.monotonic() - started)
    conn.execute(
        "INSERT INTO audit_log (actor, action, target_type, target_id, after)"
        " VALUES ('cli', 'copies.import', 'followed_user', %(u)s, %(a)s)",
        {"u": str(leader), "a": Jsonb({"file": str(args.file), "summary": line})},
    )
    conn.close()
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
