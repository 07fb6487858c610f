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


SHOWN_LINES = 10  # the summary names the first bad lines; the quarantine has them all


@dataclass
class Tally:
    rows: int = 0
    added: int = 0
    blank: int = 0
    bad: int = 0
    bad_lines: list[str] = field(default_factory=list)  # the first SHOWN_LINES

    @property
    def present(self) -> int:
        return self.rows - self.added - self.bad

    def refuse(self, lines: str) -> None:
        self.bad += 1
        if len(self.bad_lines) < SHOWN_LINES:
            self.bad_lines.append(lines)


OVERLONG = "\ufdd0overlong\n"  # what Lines gives for a line past MAX_LINE (a lone field)


class Lines:
    """The file's lines decoded (bad UTF-8 kept as surrogates, so the row with it is
    refused, not the file), a BOM dropped, and the bytes read so far. A line longer than
    MAX_LINE is never held whole: it is skipped and given as OVERLONG."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.read = f, 0

    def __iter__(self) -> Iterator[str]:
        first = True
        while raw := self.f.readline(MAX_LINE + 1):
            self.read += len(raw)
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                while (rest := self.f.readline(MAX_LINE + 1)) and not rest.endswith(b"\n"):
                    self.read += len(rest)
                self.read += len(rest)
                first = False
                yield OVERLONG
                continue
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


def printable(text: str) -> str:
    """`text` with undecodable bytes (kept as surrogates) shown as U+FFFD."""
    return text.encode("utf-8", errors="surrogateescape").decode(errors="replace")


@dataclass(frozen=True)
class Source:
    """The file being imported: its shown name and the digest of its bytes (a bad row is
    kept once per file content and line, whatever the file is called)."""

    name: str
    digest: str
    leader: int

    def reject(self, line: int, lines: str, reason: str, fields: list[str]) -> wire.Reject:
        """The reject of the row on `lines` (its first, `line`, and its last if more)."""
        text = printable(",".join(fields))
        payload = f"{self.name}:{lines}: {text}"
        key = f"{self.digest}:{lines}".encode()
        return wire.Reject(
            source=SOURCE,
            reason=f"{self.name} line {lines}: {reason}",
            payload=payload,
            context={"file": self.name, "line": line, "lines": lines, "copy_of": self.leader},
            payload_sha256=hashlib.sha256(key).hexdigest(),
            payload_bytes=len(payload.encode()),
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
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    src = Source(printable(path.name), digest, leader)
    tally, seen = Tally(), set()
    batch: list[tuple[Any, ...]] = []
    bad: list[wire.Reject] = []
    progress = Progress(path.stat().st_size, stderr)
    csv.field_size_limit(MAX_LINE)
    with path.open("rb") as f:
        lines = Lines(f)
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise copy_csv.HeaderError("the file is empty: no header") from None
        except csv.Error as exc:
            raise copy_csv.HeaderError(f"the header cannot be read: {exc}") from None
        cols = copy_csv.columns(header)
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                fields, why = [], f"not CSV: {exc}"
            else:
                why = "longer than 64 kB" if fields == [OVERLONG.strip("\n")] else ""
            end = reader.line_num
            where = str(start) if end <= start else f"{start}-{end}"
            if not why and not any(x.strip() for x in fields):
                tally.blank += 1
                continue
            tally.rows += 1
            try:
                if why:
                    raise copy_csv.BadRow(why)
                r = copy_csv.row(fields, cols, now)
            except copy_csv.BadRow as exc:
                tally.refuse(where)
                bad.append(src.reject(start, where, str(exc), fields))
            else:
                key, n = r.key, 0
                while (
                    digest_ := hashlib.blake2b(f"{key}#{n}".encode(), digest_size=12).digest()
                ) in seen:
                    n += 1
                seen.add(digest_)
                batch.append(
                    (leader, key if n == 0 else f"{key}#{n}", src.name, start, r.tx_hash,
                     r.asset_id, r.side, r.price, r.size, r.fee, r.at, now)
                )  # fmt: skip
            if len(batch) + len(bad) >= BATCH:
                tally.added += _flush(conn, batch, bad, now)
            progress.show(lines.read, tally.rows)
    tally.added += _flush(conn, batch, bad, now)
    progress.show(lines.read, tally.rows, final=True)
    return tally


def summary(name: str, t: Tally, seconds: float) -> str:
    """The closing line: what was read, added, already present, quarantined (and where)."""
    where = ""
    if t.bad:
        shown = ", ".join(t.bad_lines)
        more = f" and {t.bad - len(t.bad_lines):,} more" if t.bad > len(t.bad_lines) else ""
        where = f" (lines {shown}{more}: see the quarantine)"
    blank = f", {t.blank:,} blank lines skipped" if t.blank else ""
    rate = t.rows / seconds if seconds > 0 else 0
    return (
        f"{name}: {t.rows:,} rows, {t.added:,} added, {t.present:,} already there (imported"
        f" before, or a copy wallet's), {t.bad:,} quarantined{where}{blank};"
        f" {seconds:.1f} s ({rate:,.0f} rows/s)"
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
        print(f"import_copies: {printable(args.file.name)}: {exc}", file=sys.stderr)
        conn.close()
        return 2
    line = summary(printable(args.file.name), tally, time.monotonic() - started)
    conn.execute(
        "INSERT INTO audit_log (actor, action, target_type, target_id, after)"
        " VALUES ('cli', 'copies.import', 'followed_user', %(u)s, %(a)s)",
        {"u": str(leader), "a": Jsonb({"file": printable(str(args.file)), "summary": line})},
    )
    conn.close()
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
