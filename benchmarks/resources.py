"""Resources of the whole local stack (what `make run` starts): memory and CPU of every
process, grouped by supervisor program, and of Postgres, on this machine.

Set-up, isolated from a demo that may be running: `python -m run_local` with its
own OCULUS_VAR_DIR and OCULUS_PUBLIC_DIR in a temp dir (so its own embedded Postgres,
logs, nginx prefix and supervisor socket; or the server of --database-url, on this
machine, in which a fresh database is made and dropped after), its own free ports
(OCULUS_HTTP_PORT, OCULUS_API_PORT, --sandbox-port) and, like cold_start, a private
PYTHONPYCACHEPREFIX (--as-is keeps this environment's bytecode settings). It runs the
demo: the sandbox exchange and its leaders, so the figures include real work.

Sampling, every --every seconds for --warmup + --minutes: the process tree under
run_local (supervisord asked over its socket which pid is which program; each program
with all its live descendants, e.g. the pg_dump of a backup run: the scheduler runs its
jobs in threads) and the Postgres server (the postmaster and all its children). Per
process: RSS and PSS (/proc/PID/smaps_rollup; PSS splits shared pages between their
users, fairer for forked postgres backends and for the sum of many Python processes) and
CPU time (utime + stime + cutime + cstime from /proc/PID/stat: children a process reaped
count for it;
supervisord and run_local count their own time only, their children being the
programs).
The warm-up (start-up: imports, migrations) is left out of the figures.

Printed per group (program, "run_local", "supervisord", "postgres"): processes (max),
mean and peak RSS, peak PSS, CPU share (% of one core over the window) and the part of
it used by children that ended (e.g. closed backends); the totals of
"all Oculus processes" (everything but postgres and the sandbox, the demo's stand-in for
Polymarket) with the goal ≤ 400 MB RSS beside them, and of postgres; the machine's
MemAvailable (min); Postgres backends (peak) against max_connections; and the job runs
recorded in the window. Then everything is stopped (SIGTERM to run_local, which stops
supervisord and the embedded Postgres it started; `python -m common.store.db stop` as a
fallback), each step bounded in time, and the temp dir removed (unless --keep-dir).
Run: python -m benchmarks.resources [--minutes 10] [--every 5] [--warmup 30]
     [--sandbox-port N] [--http-port N] [--api-port N] [--database-url SERVER_URL]
     [--as-is] [--keep-dir]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import xmlrpc.client as xmlrpclib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from supervisor import xmlrpc  # type: ignore[import-untyped]

from common.runtime import settings
from common.store import db

GOAL_MB = 400.0
NOT_OCULUS = ("postgres", "sandbox")
TICK_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int  # clock ticks after boot: a pid reused later has another
    own_cpu_s: float  # utime + stime
    children_cpu_s: float  # cutime + cstime: reaped children


def read_procs() -> dict[int, Proc]:
    """Every process now, from /proc/PID/stat."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        u, s, cu, cs = (int(x) / TICK_S for x in fields[11:15])
        out[pid] = Proc(pid, int(fields[1]), int(fields[19]), u + s, cu + cs)
    return out


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB from /proc/PID/smaps_rollup; (0, 0) when it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def descendants(root: int, procs: dict[int, Proc]) -> list[int]:
    """`root` and every live process below it."""
    children: dict[int, list[int]] = defaultdict(list)
    for p in procs.values():
        children[p.ppid].append(p.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            out.append(pid)
            todo.extend(children[pid])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Group:
    """One program's (or postgres's) samples and CPU account: CPU times are pairs (own,
    reaped children) of its processes; a restart starts a new root whose CPU adds on."""

    rss_mb: list[float] = field(default_factory=list)
    pss_mb: list[float] = field(default_factory=list)
    procs: list[int] = field(default_factory=list)
    root: tuple[int, int] | None = None  # (pid, start) of the process its CPU hangs on
    cpu_now: tuple[float, float] = (0.0, 0.0)  # the current root's subtree, last sample
    cpu_gone: tuple[float, float] = (0.0, 0.0)  # earlier roots', at their last sample
    cpu_first: tuple[float, float] | None = None  # at the window's start

    def cpu_total(self) -> tuple[float, float]:
        return (self.cpu_gone[0] + self.cpu_now[0], self.cpu_gone[1] + self.cpu_now[1])

    def cpu_used(self) -> tuple[float, float]:
        """(own, reaped children) CPU seconds in the window."""
        (own, reaped), (own0, reaped0) = self.cpu_total(), self.cpu_first or (0.0, 0.0)
        return own - own0, reaped - reaped0


class Sampler:
    """Samples the run_local tree and the Postgres server, by group."""

    def __init__(self, run_local_pid: int, supervisor_sock: Path, postmaster: int) -> None:
        self.run_local_pid = run_local_pid
        transport = xmlrpc.SupervisorTransport(serverurl=f"unix://{supervisor_sock}")
        self.rpc = xmlrpclib.ServerProxy("http://localhost", transport=transport)
        self.postmaster = postmaster
        self.groups: dict[str, Group] = defaultdict(Group)
        self.mem_available: list[float] = []
        self.backends: list[int] = []
        self.samples = 0
        self.started: float | None = None
        self.last: float | None = None

    def programs(self) -> dict[int, str]:
        """pid → supervisor program name, for the programs running now."""
        try:
            infos: list[dict[str, object]] = self.rpc.supervisor.getAllProcessInfo()  # type: ignore[assignment]
        except (OSError, xmlrpclib.Error):
            return {}
        return {int(str(i["pid"])): str(i["name"]) for i in infos if i["pid"]}

    def sample(self, record: bool) -> None:
        """Takes one sample; with `record` it counts for the figures (else warm-up)."""
        procs = read_procs()
        # group → (root pid, its pids, whether reaped children count)
        members: dict[str, tuple[int | None, list[int], bool]] = {}
        in_programs: set[int] = set()
        for pid, name in self.programs().items():
            tree = descendants(pid, procs)
            members[name] = (pid, tree, True)
            in_programs.update(tree)
        for pid in descendants(self.run_local_pid, procs):
            if pid in in_programs:
                continue
            if "supervisord" in cmdline(pid):
                members["supervisord"] = (pid, [pid], False)  # its children are programs
            elif pid == self.run_local_pid:
                members["run_local"] = (pid, [pid], False)  # its child is supervisord
            else:  # between a program's exit and supervisord's notice, say
                members.setdefault("other", (None, [], True))[1].append(pid)
        pg_tree = descendants(self.postmaster, procs)
        members["postgres"] = (self.postmaster, pg_tree, True)
        now = time.monotonic()
        for name, (root, pids, reaps) in members.items():
            g = self.groups[name]
            key = (root, procs[root].start) if root in procs else None
            live = [procs[p] for p in pids if p in procs]
            cpu = (
                sum(p.own_cpu_s for p in live),
                sum(p.children_cpu_s for p in live) if reaps else 0.0,
            )
            if key != g.root:  # a new root: the program (re)started
                g.cpu_gone = g.cpu_total()
                g.root = key
            g.cpu_now = cpu
            if not record:
                continue
            if g.cpu_first is None:  # at the window's start; 0 for a group born in it
                g.cpu_first = g.cpu_total() if self.started is None else (0.0, 0.0)
            rss = pss = 0
            for p in pids:
                r, s_ = memory_kb(p)
                rss += r
                pss += s_
            g.rss_mb.append(rss / 1024)
            g.pss_mb.append(pss / 1024)
            g.procs.append(len(pids))
        if record:
            self.started = self.started or now
            self.last = now
            self.samples += 1
            self.mem_available.append(mem_available_mb())
            self.backends.append(sum(1 for p in pg_tree if _CLIENT.search(cmdline(p))))


# A client backend's title names its client: "postgres: user db [local] idle" or
# "... 127.0.0.1(51234) ..."; the server's own processes do not.
_CLIENT = re.compile(r" (\[local\]|[0-9a-f.:]+\(\d+\)) ")


def database_url(env: dict[str, str]) -> str:
    """The stack's database URL: what `python -m common.store.db url` says in its environment."""
    done = subprocess.run(
        [sys.executable, "-m", "common.store.db", "url"],
        env=env,
        cwd=settings.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def postmaster_pid(url: str) -> int:
    """The server's postmaster: the parent of this connection's backend (a local server)."""
    with db.connect(url, autocommit=True) as conn:  # read while the backend lives
        backend = conn.info.backend_pid
        with open(f"/proc/{backend}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])


def setting(conn: db.Conn, name: str) -> str:
    row = conn.execute("SELECT current_setting(%s) AS v", (name,)).fetchone()
    return str(row["v"]) if row else "?"


def report(s: Sampler, url: str, window_start: datetime) -> None:
    elapsed = (s.last or 0.0) - (s.started or 0.0)
    if s.samples < 2 or elapsed <= 0:
        print("fewer than 2 samples: nothing to report")
        return
    print(
        f"window {elapsed:.0f} s, {s.samples} samples; MB; CPU % of one core (reaped: the"
        " part used by children that ended, e.g. closed backends)"
    )
    print(
        f"{'group':<16}{'procs':>6}{'RSS mean':>10}{'RSS peak':>10}{'PSS peak':>10}"
        f"{'CPU %':>8}{'reaped':>8}"
    )
    total_rss, total_pss = [0.0] * s.samples, [0.0] * s.samples
    total_cpu = [0.0, 0.0]

    def line(name: str, procs: str, rss: list[float], pss: list[float], cpu: list[float]) -> str:
        return (
            f"{name:<16}{procs:>6}{statistics.fmean(rss):>10.1f}{max(rss):>10.1f}"
            f"{max(pss):>10.1f}{100 * sum(cpu) / elapsed:>8.1f}{100 * cpu[1] / elapsed:>8.1f}"
        )

    for name in sorted(s.groups, key=lambda n: (n in NOT_OCULUS, n)):
        g = s.groups[name]
        if not g.rss_mb:
            continue
        cpu = list(g.cpu_used())
        print(line(name, str(max(g.procs)), g.rss_mb, g.pss_mb, cpu))
        if name not in NOT_OCULUS:
            pad = s.samples - len(g.rss_mb)  # a group that appeared late: align to the end
            for i, (r, p) in enumerate(zip(g.rss_mb, g.pss_mb, strict=True)):
                total_rss[pad + i] += r
                total_pss[pad + i] += p
            total_cpu = [total_cpu[0] + cpu[0], total_cpu[1] + cpu[1]]
    verdict = "ok" if max(total_rss) <= GOAL_MB else "over"
    print(
        line("all Oculus", "", total_rss, total_pss, total_cpu)
        + f"   goal: RSS ≤ {GOAL_MB:.0f} MB ({verdict})"
    )
    print(
        f"MemAvailable min {min(s.mem_available):.0f} MB (first sample"
        f" {s.mem_available[0]:.0f} MB; the whole machine, other work included)"
    )
    with db.connect(url, autocommit=True) as conn:
        knobs = ", ".join(
            f"{name} {setting(conn, name)}"
            for name in ("max_connections", "shared_buffers", "work_mem")
        )
        print(f"postgres client backends: peak {max(s.backends)} ({knobs})")
        runs = conn.execute(
            """SELECT job, count(*) AS n, avg(finished_at - started_at) AS mean,
                      count(*) FILTER (WHERE status <> 'OK') AS not_ok
               FROM job_run WHERE started_at >= %(t)s GROUP BY job ORDER BY job""",
            {"t": window_start},
        ).fetchall()
    listed = ", ".join(
        f"{r['job']} {r['n']}×{r['mean'].total_seconds() if r['mean'] else 0:.2f}s"
        + (f" ({r['not_ok']} not OK)" if r["not_ok"] else "")
        for r in runs
    )
    print(f"job runs in the window (count × mean duration): {listed or 'none'}")


def stop(proc: subprocess.Popen[bytes], var_dir: Path, env: dict[str, str], own_db: bool) -> None:
    """Stops run_local (it stops supervisord and the embedded Postgres it started), then
    makes sure: supervisord, any process left in the tree, the embedded Postgres."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            print("run_local did not stop in 90 s: killing its process group", file=sys.stderr)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    pid_file = var_dir / "supervisord.pid"
    if pid_file.exists():  # supervisord removes it when it exits
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGTERM)
            print(f"supervisord {pid} was still up: sent SIGTERM", file=sys.stderr)
            time.sleep(15)
            os.killpg(pid, signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass
    if own_db:
        subprocess.run(
            [sys.executable, "-m", "common.store.db", "stop"],
            env=env,
            cwd=settings.ROOT,
            capture_output=True,
            timeout=90,
            check=False,
        )


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The options of a run of the whole stack (this benchmark's and `scale`'s)."""
    p = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=10.0, help="measured window")
    p.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds left out at the start")
    p.add_argument("--sandbox-port", type=int, help="default: a free port")
    p.add_argument("--http-port", type=int, help="nginx's (default: a free port)")
    p.add_argument("--api-port", type=int, help="the write API's (default: a free port)")
    p.add_argument("--database-url", help="a server URL to use instead of an own embedded one")
    p.add_argument("--as-is", action="store_true", help="keep this environment's bytecode set-up")
    p.add_argument("--keep-dir", action="store_true", help="keep the temp dir (logs)")
    p.add_argument("--leaders", type=int, default=3, help="the sandbox's leaders, all followed")
    return p


# Called with the stack's database URL: at each recorded sample, and after the window
# (with the sampler and the window's start).
OnSample = Callable[[str], None]
After = Callable[[Sampler, str, datetime], None]


def main(argv: list[str] | None = None) -> int:
    return run(parser("python -m benchmarks.resources", __doc__).parse_args(argv))


def run(
    args: argparse.Namespace, on_sample: OnSample | None = None, after: After | None = None
) -> int:
    """Starts the stack, samples it for the window, reports, stops it."""
    tmp = Path(tempfile.mkdtemp(prefix="oculus-resources-"))
    var_dir = tmp / "var"
    env = {
        **os.environ,
        "OCULUS_VAR_DIR": str(var_dir),
        "OCULUS_PUBLIC_DIR": str(tmp / "public"),
        "OCULUS_HTTP_PORT": str(args.http_port or free_port()),
        "OCULUS_API_PORT": str(args.api_port or free_port()),
    }
    for name in ("DATABASE_URL", "OCULUS_DATABASE_URL", "OCULUS_CLOCK_URL"):
        env.pop(name, None)
    if not args.as_is:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    scratch = None
    if args.database_url:
        scratch = f"oculus_resources_{uuid.uuid4().hex[:8]}"
        db.ensure_database(args.database_url, scratch)
        env["DATABASE_URL"] = db.with_database(args.database_url, scratch)
    sandbox_port = args.sandbox_port or free_port()
    (tmp / "public").mkdir()
    log_path = tmp / "run_local.log"
    print(
        f"stack in {tmp}: http {env['OCULUS_HTTP_PORT']}, api {env['OCULUS_API_PORT']}, "
        f"sandbox {sandbox_port}; {args.warmup:.0f} s warm-up, then {args.minutes:g} min"
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "run_local",
                "--sandbox-port",
                str(sandbox_port),
                "--sandbox-leaders",
                str(args.leaders),
            ],
            env=env,
            cwd=settings.ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our Ctrl-C goes to us; we stop it in order
        )
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sock = var_dir / "supervisor.sock"
        deadline = time.monotonic() + 180
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                print(f"the stack did not start; {log_path}:\n{log_path.read_text()[-3000:]}")
                return 1
            time.sleep(0.5)
        url = env.get("DATABASE_URL") or database_url(env)
        sampler = Sampler(proc.pid, sock, postmaster_pid(url))
        window_start = datetime.now(tz=UTC)
        end_warmup = time.monotonic() + args.warmup
        end = end_warmup + args.minutes * 60
        while time.monotonic() < end and proc.poll() is None:
            warm = time.monotonic() >= end_warmup
            if warm and sampler.started is None:
                window_start = datetime.now(tz=UTC)
            sampler.sample(record=warm)
            if warm and on_sample is not None:
                on_sample(url)
            time.sleep(max(0.0, min(args.every, end - time.monotonic())))
        sampler.sample(record=True)
        if proc.poll() is not None:
            print(f"run_local exited early ({proc.returncode}); figures cover what ran")
        report(sampler, url, window_start)
        if after is not None:
            after(sampler, url, window_start)
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop(proc, var_dir, env, own_db=args.database_url is None)
        if scratch is not None:
            with psycopg.connect(args.database_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(scratch)
                    )
                )
        if args.keep_dir:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
