"""The one typed settings class. Every field is read from an `OCULUS_*` environment
variable (`DATABASE_URL` has no prefix; names are matched in any case) and documented in
README.md's settings table; tests/test_settings.py keeps the two in step.

The environment is read here (`from_env`) and validated by a pydantic model, not by
pydantic-settings: that library (and python-dotenv) cost every process ~2 MB of memory,
and Oculus runs seven Python processes on a 2 GB box (issue 18's goal: ≤ 400 MB for all
of them)."""

from __future__ import annotations

import functools
import os
import re
import socket
import urllib.parse
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ROOT = Path(__file__).resolve().parents[2]
# The label prefix `make run` gives the sandbox's leaders: a database whose users carry
# it is a demo one (follow add then never reaches the real Polymarket).
SANDBOX_LEADER_LABEL = "sandbox-leader-"
SANDBOX_COPIER_LABEL = "sandbox-copier-"  # the demo's copy wallets of its first leader

V1_EXCHANGES = (
    "0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e",  # CTF Exchange
    "0xc5d563a36ae78145c45a50134d48a1215220f80a",  # NegRisk CTF Exchange
)
V2_EXCHANGES = (
    "0xe111180000d2663c0091e4f400237545b87b996b",  # CTF Exchange V2
    "0xe2222d279d744050d28e00520010520000310f59",  # NegRisk CTF Exchange V2
)
V1_ORDER_FILLED_TOPIC = "0xd0a08e8c493f9c94f29311604c9de1b4e8c8d4c06bd0c789af57f2d65bfec0f6"
V2_ORDER_FILLED_TOPIC = "0xd543adfd945773f1a62f74f0ee55a5e3b9b1a28262980ba90b1a89f2ea84d8ee"
# Polymarket/neg-risk-ctf-adapter: the NegRiskAdapter (convertPositions), still the one
# V2 neg-risk markets convert through, and topic0 of its
# PositionsConverted(address indexed stakeholder, bytes32 indexed marketId,
# uint256 indexed indexSet, uint256 amount).
NEG_RISK_ADAPTERS = ("0xd91e80cf2e7be2e162c6513ced06f1dd0da35296",)
POSITIONS_CONVERTED_TOPIC = "0xb03d19dddbc72a87e735ff0ea3b57bef133ebe44e1894284916a84044deb367e"

AddressList = tuple[str, ...]  # from a comma-separated variable
OriginList = tuple[str, ...]
ENV_PREFIX = "OCULUS_"
# Fields read from other variables than OCULUS_<NAME>, the first set one winning.
ENV_ALIASES = {"database_url": ("DATABASE_URL", "OCULUS_DATABASE_URL")}
# Listening on one of these, the dashboard is also reached by the other name.
LOOPBACK_ALIASES = {"127.0.0.1": "localhost", "localhost": "127.0.0.1", "::1": "localhost"}
ALL_ADDRESSES = ("", "*", "0.0.0.0", "::", "[::]")
LADDER_MARGIN_S = 5.0  # the history holds the longest ladder delay and this much more


def origin(text: str) -> str:
    """Returns the origin as browsers send it (`scheme://host[:port]`, lower case, no
    default port); ValueError if `text` is not one (a path, user or query included)."""
    parts = urllib.parse.urlsplit(text.strip())
    scheme, host = parts.scheme.lower(), parts.hostname
    extra = parts.username or parts.password or parts.query or parts.fragment
    if scheme not in ("http", "https") or not host or extra or parts.path not in ("", "/"):
        raise ValueError(f"not an origin (scheme://host[:port]): {text!r}")
    port = parts.port  # ValueError when not a port number
    default = {"http": 80, "https": 443}[scheme]
    named = f"[{host}]" if ":" in host else host
    return f"{scheme}://{named}" + (f":{port}" if port not in (None, default) else "")


def parse_path_limits(text: str) -> dict[str, dict[str, tuple[float, int]]]:
    """'data_api/trades=20:40, data_api/positions=15:30' → {'data_api': {'/trades':
    (20.0, 40), ...}}; raises ValueError naming the bad entry."""
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for entry in (e.strip() for e in text.replace(";", ",").split(",")):
        if not entry:
            continue
        match = re.fullmatch(r"([a-z_]+)(/[A-Za-z0-9_/-]+)=(\d+(?:\.\d+)?):(\d+)", entry)
        if match is None or float(match.group(3)) <= 0 or int(match.group(4)) < 1:
            raise ValueError(f"not upstream/path=rps:burst with rps > 0, burst ≥ 1: {entry!r}")
        upstream, path = match.group(1), match.group(2)
        if upstream not in ("data_api", "clob", "gamma"):
            raise ValueError(f"no upstream {upstream!r} (data_api, clob or gamma): {entry!r}")
        out.setdefault(upstream, {})[path] = (float(match.group(3)), int(match.group(4)))
    return out


def env_names(field: str) -> tuple[str, ...]:
    """The environment variables a field is read from, the first set one winning."""
    return ENV_ALIASES.get(field, (f"{ENV_PREFIX}{field.upper()}",))


def from_env() -> dict[str, str]:
    """The settings the environment sets: field name → raw text (names in any case, as
    a shell may export them; validation is the model's)."""
    upper = {k.upper(): v for k, v in os.environ.items()}
    out = {}
    for field in Settings.model_fields:
        found = next((upper[n] for n in env_names(field) if n in upper), None)
        if found is not None:
            out[field] = found
    return out


class Settings(BaseModel):
    """Settings(): from the environment; Settings(name=value, ...): those values over
    the environment's (tests)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**from_env(), **values})

    database_url: str | None = Field(
        default=None,
        description="Postgres URL. Unset: an embedded Postgres starts under var/pgdata.",
    )
    var_dir: Path = Field(
        default=ROOT / "var", description="Runtime files: embedded Postgres data, logs, dumps."
    )
    db_pool_max: int = Field(default=4, ge=1, le=50, description="Connections per process.")
    log_level: str = Field(default="INFO", description="Python logging level.")
    clock_url: str | None = Field(
        default=None,
        description="Tests and reproducible demos only: read the time from the sandbox's "
        "`/_sandbox` control URL; with a manual sandbox clock, simulate moves it to each "
        "decision time. Unset: the system clock.",
    )

    data_api_url: str = Field(
        default="https://data-api.polymarket.com", description="Polymarket Data API base URL."
    )
    clob_url: str = Field(default="https://clob.polymarket.com", description="CLOB base URL.")
    gamma_url: str = Field(
        default="https://gamma-api.polymarket.com", description="Gamma markets API base URL."
    )
    market_link_url: str = Field(
        default="https://polymarket.com/event/",
        description="A market page links out to this + its event's slug; empty: no link.",
    )
    chain_ws_url: str = Field(
        default="wss://polygon-bor-rpc.publicnode.com",
        description="Polygon JSON-RPC WebSocket for eth_subscribe logs.",
    )
    clob_ws_url: str = Field(
        default="wss://ws-subscriptions-clob.polymarket.com/ws/market",
        description="The CLOB's market-channel WebSocket (functions.watch_books: live books).",
    )
    rtds_ws_url: str = Field(
        default="",
        description="Polymarket's real-time data service WebSocket (RTDS, topic "
        "activity/trades: fills before the block; functions.listen_rtds), e.g. "
        "wss://ws-live-data.polymarket.com. Empty: off (the topic is undocumented and lapses "
        "at times; the chain and the Data API stay the sources of truth).",
    )
    rtds_stale_s: float = Field(
        default=60.0,
        ge=5,
        le=3600,
        description="functions.listen_rtds reconnects when no trade (of any wallet) has "
        "arrived for this long although the socket answers PINGs (RTDS lapses silently).",
    )
    rtds_settle_grace_s: float = Field(
        default=300.0,
        gt=0,
        description="An RTDS fill neither the chain nor the Data API confirms within this "
        "long is flagged UNSETTLED by reconcile (out of every sum; its shadow entries "
        "reversed).",
    )
    watch_books_s: float = Field(
        default=3600.0,
        gt=0,
        le=7 * 86400,
        description="functions.watch_books watches an asset's book from its first detected "
        "fill until this long after its latest one (seconds).",
    )
    watch_books_max_assets: int = Field(
        default=500,
        ge=1,
        le=5000,
        description="At most this many assets are watched at once (those with the newest "
        "fills first).",
    )
    watch_books_rest_check_s: float = Field(
        default=60.0,
        ge=5,
        description="Each watched book is compared with the CLOB's REST /book this often "
        "(seconds; the assets take turns); a difference resyncs it from REST.",
    )
    ladder_delays_s: str = Field(
        default="0,2,5,10,30,60",
        description="The book ladder's delays after a leader's first fill (seconds, "
        "comma-separated; SPEC §12); the longest + 5 s within OCULUS_WATCH_BOOKS_HISTORY_S.",
    )
    watch_books_serve: str = Field(
        default="",
        description="host:port on which functions.watch_books serves its live books "
        "(GET /book?token_id=…, the CLOB's format) to the simulator; empty: not served. "
        "Keep it on loopback.",
    )
    live_books_url: str = Field(
        default="",
        description="The simulator asks this URL (functions.watch_books' live books, e.g. "
        "http://127.0.0.1:8097) for a decision's book first, for at most 200 ms, then "
        "the CLOB's REST /book; empty: REST only. Each stored book records which.",
    )
    sweep_hours: float = Field(
        default=24.0,
        gt=0,
        le=24 * 31,
        description="functions.sweep (the latency sweep, every 15 minutes) re-decides the "
        "groups of the last this many hours at each ladder delay.",
    )
    watch_books_history_s: float = Field(
        default=120.0,
        ge=10,
        le=3600,
        description="How much history of each watched book is kept, so the book just "
        "before a fill can be rebuilt (seconds).",
    )

    exchange_addresses_v1: AddressList = Field(
        default=V1_EXCHANGES, description="V1 exchange contracts (comma-separated)."
    )
    exchange_addresses_v2: AddressList = Field(
        default=V2_EXCHANGES, description="V2 exchange contracts (comma-separated)."
    )
    order_filled_topic_v1: str = Field(
        default=V1_ORDER_FILLED_TOPIC, description="topic0 of the V1 OrderFilled event."
    )
    order_filled_topic_v2: str = Field(
        default=V2_ORDER_FILLED_TOPIC, description="topic0 of the V2 OrderFilled event."
    )
    neg_risk_adapters: AddressList = Field(
        default=NEG_RISK_ADAPTERS,
        description="NegRiskAdapter contracts whose PositionsConverted logs are read.",
    )
    positions_converted_topic: str = Field(
        default=POSITIONS_CONVERTED_TOPIC,
        description="topic0 of the NegRiskAdapter's PositionsConverted event.",
    )

    http_timeout_s: float = Field(default=10.0, gt=0, description="Per-request HTTP timeout.")
    http_max_retries: int = Field(
        default=4, ge=0, le=10, description="Retries on connection errors, 429 and 5xx."
    )
    http_deadline_s: float = Field(
        default=30.0,
        gt=0,
        description="One attempt's whole answer must arrive within this (a slow drip "
        "never trips the per-read timeout); past it the request fails, not retried.",
    )
    http_max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="An answer longer than this (decompressed) is refused unread past it "
        "and quarantined as a prefix.",
    )
    rate_limit_rps: float = Field(
        default=20.0, gt=0, description="Token-bucket refill per upstream (requests/s)."
    )
    rate_limit_burst: int = Field(default=40, ge=1, description="Token-bucket size per upstream.")
    rate_limit_paths: str = Field(
        default="data_api/trades=20:40, data_api/positions=15:30",
        description="Paths with a tighter limit of their own, drawn on as well as their "
        "upstream's: upstream/path=rps:burst, comma-separated.",
    )
    rate_limit_shared: bool = Field(
        default=True,
        description="The jobs' request budgets live in Postgres, shared by every process "
        "and host on the database (false: each process has its own).",
    )
    breaker_threshold: int = Field(
        default=3, ge=1, description="429s in a row that open an upstream's breaker."
    )
    breaker_open_s: float = Field(
        default=15.0, ge=0, description="How long an open breaker fails calls fast."
    )

    poll_overlap_s: float = Field(
        default=120.0, ge=0, description="Each poll re-reads this much before its checkpoint."
    )
    poll_backfill_on_start_s: float = Field(
        default=900.0, ge=0, description="How far the first poll of a process reaches back."
    )
    poll_active_window_s: float = Field(
        default=900.0,
        ge=0,
        description="A user with an event detected this recently is polled every run.",
    )
    poll_idle_every_s: float = Field(
        default=60.0,
        ge=0,
        description="While the listener is connected, an idle user is polled this often "
        "(0: every user every run).",
    )
    poll_confirm_after_s: float = Field(
        default=3.0,
        ge=0,
        le=60,
        description="A chain fill's Data API row is looked for this long after the "
        "listener saw it, then after 2x, 4x, ... that, ahead of the run's other users "
        "(0: only in the run's turn).",
    )
    role_lease_s: float = Field(
        default=15.0,
        ge=3,
        le=300,
        description="An elected role (the scheduler, the listener, each job's one copy) "
        "lasts this long unless renewed; a standby on another host takes it over then.",
    )
    poll_lease_s: float = Field(
        default=20.0,
        ge=5,
        le=300,
        description="A poll loop's hold on its users lasts this long unless renewed; a "
        "host gone this long has its users taken over by the others.",
    )
    poll_run_max_s: float = Field(
        default=30.0,
        ge=5,
        le=600,
        description="A poll loop's run starts no new user after this long; the users left "
        "come first in the next run.",
    )
    host_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="This host's name in leases, heartbeats and runs (default: the "
        "hostname); every host on one database needs its own.",
    )
    poll_max_rows: int = Field(
        default=20_000,
        ge=1_000,
        le=1_000_000,
        description="Data API rows one poll run reads per user at most (memory bound).",
    )
    seed_window_s: float = Field(
        default=900.0,
        gt=0,
        description="At follow time, fills this recent are matched against the /positions "
        "seed; older history is never applied to the shadow book.",
    )
    shadow_chain_grace_s: float = Field(
        default=60.0,
        ge=0,
        description="A fill seen by one source only (chain or Data API) waits this long "
        "for the other before the shadow ledger applies it.",
    )

    market_refresh_s: float = Field(
        default=600.0,
        gt=0,
        description="Gamma metadata of markets with positions is reread this often.",
    )
    market_resolve_poll_s: float = Field(
        default=60.0,
        gt=0,
        description="Past its end time and not yet resolved, a market with positions is "
        "reread this often (resolution → settlement).",
    )

    shadow_settle_after_s: float = Field(
        default=86_400.0,
        ge=0,
        description="A shadow position still held this long after its market resolved is "
        "settled at the payout and flagged unredeemed.",
    )

    reconcile_backfill_s: float = Field(
        default=120.0, ge=0, description="How far each reconcile run re-polls the Data API."
    )
    reconcile_confirm_after_s: float = Field(
        default=300.0,
        gt=0,
        description="A chain fill with no Data API row after this long is flagged (and an "
        "API fill without a chain log while the listener was up).",
    )
    reconcile_stale_after_s: float = Field(
        default=180.0,
        gt=0,
        description="Heartbeats and poll checkpoints older than this are flagged as stale.",
    )

    public_dir: Path = Field(
        default=ROOT / "public", description="Where the site builder writes the dashboard."
    )
    site_interval_s: float = Field(
        default=3.0, gt=0, description="The site builder rebuilds what changed this often."
    )
    site_budget_s: float = Field(
        default=0.8,
        gt=0,
        description="Work one build round does before it publishes and leaves the rest of "
        "the changed pages to the next round (the overview and feeds go first).",
    )
    http_host: str = Field(default="127.0.0.1", description="Address nginx listens on.")
    http_port: int = Field(default=8080, ge=1, le=65535, description="Port nginx listens on.")
    public_origin: OriginList = Field(
        default=(),
        description="The dashboard's origin as browsers reach it, scheme://host[:port] "
        "(several: comma-separated). Writes must come from it, and nginx refuses other "
        "host names. Unset: http://OCULUS_HTTP_HOST:OCULUS_HTTP_PORT (and the other "
        "loopback name, localhost or 127.0.0.1).",
    )
    api_host: str = Field(default="127.0.0.1", description="Address the write API binds.")
    api_port: int = Field(default=8081, ge=1, le=65535, description="Port the write API binds.")
    admin_user: str = Field(default="admin", description="The admin's login name.")
    admin_password_hash: str | None = Field(
        default=None,
        description="The admin's password as `python -m api passwd` prints it (scrypt). "
        "Unset: read from var/admin.passwd, which `make run` creates on first start.",
    )
    secret_key: str | None = Field(
        default=None,
        description="Signs session cookies. Unset: a random key kept in var/secret.key.",
    )
    session_ttl_s: float = Field(
        default=43_200.0, gt=0, description="A login lasts this long (seconds)."
    )
    login_failures_allowed: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Failed logins from all addresses together within 10 minutes before "
        "the API refuses logins (429) for 30 s, then twice as long after each further "
        "failure; 10 quiet minutes restore the allowance.",
    )
    login_backoff_max_s: float = Field(
        default=900.0, gt=0, description="The longest login lock after failed logins."
    )
    cookie_secure: bool = Field(
        default=False,
        description="Mark the session cookie Secure (set it when nginx serves HTTPS).",
    )

    # The scheduler (functions.scheduler) and the operator commands.
    crontab_path: Path = Field(
        default=ROOT / "crontab", description="The job schedule the scheduler runs."
    )
    wake_min_gap_s: float = Field(
        default=1.0,
        ge=0,
        description="A job woken early (NOTIFY) starts at most this often (seconds).",
    )

    # Backups (functions.backup).
    backup_dir: Path | None = Field(
        default=None, description="Where nightly dumps are written. Unset: var/backups."
    )
    backup_keep: int = Field(default=7, ge=1, description="Dumps kept in the backup directory.")
    backup_target_dir: Path | None = Field(
        default=None,
        description="Each new dump is also copied here (another disk or a mounted remote); "
        "the same number is kept there.",
    )
    backup_command: str | None = Field(
        default=None,
        description="Run after each dump with the dump's path as its last argument "
        "(e.g. `rclone copy` or `scp` to another host); a failure fails the backup run.",
    )

    score_window_days: int = Field(
        default=30,
        ge=1,
        le=400,
        description="Copy attempts this recent have their assets marked (held or not), so "
        "their attribution follows the mark.",
    )
    score_mark_max_age_s: float = Field(
        default=900.0,
        ge=60,
        description="An attribution uses an asset's newest mark only if observed this "
        "recently; otherwise the row waits for a fresh one.",
    )

    # Retention (functions.prune).
    prune_marks_full_days: int = Field(
        default=8,
        ge=1,
        description="Marks (market_price_snapshot) keep their 30 s resolution this many "
        "days (the what-if reaches 7 days back); older ones are thinned.",
    )
    prune_marks_bucket_s: int = Field(
        default=3600,
        ge=60,
        multiple_of=30,
        description="Thinned marks keep the last one per asset in each bucket this long "
        "(the newest mark of every asset is always kept).",
    )
    prune_snapshots_full_days: int = Field(
        default=8,
        ge=1,
        description="Portfolio snapshots keep every minute this many days (7-day PnL, "
        "weekly breaker); older ones are thinned to the hour.",
    )
    prune_books_days: int = Field(
        default=8,
        ge=1,
        description="Order books no copy group or attempt used are deleted after this many "
        "days (the newest two-sided book of each asset stays; used books are kept).",
    )
    prune_runs_days: int = Field(
        default=7, ge=1, description="OK job_run rows are deleted after this many days."
    )
    prune_failed_runs_days: int = Field(
        default=90,
        ge=1,
        description="FAILED, TIMEOUT and abandoned RUNNING job_run rows are deleted after "
        "this many days (each job's newest run and newest OK run are always kept).",
    )
    prune_metrics_full_days: int = Field(
        default=7,
        ge=1,
        le=3650,
        description="Metric points (metric_point) keep every minute this many days; older "
        "ones keep each series' on-the-hour value. Upstream probes (upstream_probe) are "
        "kept this many days.",
    )
    prune_alerts_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description="Resolved alerts (with their transitions) and sent or given-up "
        "notifications (with their attempts) are deleted after this many days.",
    )
    prune_ladder_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="The book ladder's rungs (book_ladder) are deleted this many days "
        "after they were taken (the latency sweep reads the last OCULUS_SWEEP_HOURS).",
    )
    prune_quarantine_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Quarantine rows not seen again for this many days are deleted.",
    )
    quarantine_max_per_minute: int = Field(
        default=300,
        ge=1,
        le=100_000,
        description="New quarantine rows one source may add a minute; past it they are counted.",
    )
    prune_batch_rows: int = Field(
        default=5000, ge=100, le=50_000, description="Rows one prune statement deletes at most."
    )
    prune_budget_s: float = Field(
        default=120.0,
        gt=0,
        description="A prune run stops after this long; the next run goes on from there.",
    )

    # Alerts and notifications (functions.rules, functions.notify; SPEC §11).
    rules_path: Path = Field(
        default=ROOT / "rules.yaml",
        description="The rules and channels file (rules.yaml, SPEC §11) the rules and "
        "notify jobs read again on every run, so an edit takes effect within a minute.",
    )
    telegram_api_url: str = Field(
        default="https://api.telegram.org",
        description="Telegram Bot API base URL (a channel of type telegram posts to "
        "<this>/bot<token>/sendMessage).",
    )
    notify_max_attempts: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Attempts at one notification before it is given up (DEAD).",
    )
    notify_backoff_base_s: float = Field(
        default=10.0,
        gt=0,
        description="A failed notification is tried again after this, doubled each attempt "
        "(jittered between half and all of it), up to notify_backoff_cap_s.",
    )
    notify_backoff_cap_s: float = Field(
        default=3600.0,
        gt=0,
        description="The longest wait between two attempts at a notification (a "
        "receiver's Retry-After included).",
    )
    notify_lease_s: float = Field(
        default=120.0,
        ge=1,
        le=3600,
        description="A notification claimed for sending is due again this long after, "
        "should its notifier die before recording the outcome (one duplicate, same id).",
    )
    notify_email_batch_s: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="An email channel gathers the alerts queued within this many seconds "
        "of its oldest waiting one into one message (0: no waiting).",
    )
    notify_max_per_run: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Notifications one notify run handles at most; the rest wait for the next.",
    )

    @field_validator(
        "exchange_addresses_v1", "exchange_addresses_v2", "neg_risk_adapters", mode="before"
    )
    @classmethod
    def _split_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("exchange_addresses_v1", "exchange_addresses_v2", "neg_risk_adapters")
    @classmethod
    def _check_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            if len(address) != 42 or not address.startswith("0x"):
                raise ValueError(f"not a contract address: {address!r}")
            int(address, 16)
        return tuple(a.lower() for a in value)

    @field_validator("public_origin", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part for part in value.split(",") if part.strip())
        return value

    @field_validator("public_origin")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(origin(v) for v in value))

    @field_validator("watch_books_serve")
    @classmethod
    def _check_serve(cls, value: str) -> str:
        if not value:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port (e.g. 127.0.0.1:8097), got {value!r}")
        return value

    @field_validator("ladder_delays_s")
    @classmethod
    def _check_delays(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            delays = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"not a list of seconds: {value!r}") from None
        if not delays or any(not 0 <= d <= 3600 for d in delays) or len(delays) > 20:
            raise ValueError("1 to 20 delays, each 0..3600 s")
        return ",".join(parts)

    @model_validator(mode="after")
    def _history_holds_the_ladder(self) -> Settings:
        longest = max(self.ladder_delays_ms) / 1000
        if self.watch_books_history_s < longest + LADDER_MARGIN_S:
            raise ValueError(
                f"OCULUS_WATCH_BOOKS_HISTORY_S ({self.watch_books_history_s:g}) must be at "
                f"least the longest ladder delay ({longest:g} s) + {LADDER_MARGIN_S:g} s: "
                "the ladder is read from the history once its last delay has passed"
            )
        if self.prune_ladder_days * 24 < self.sweep_hours:
            raise ValueError(
                f"OCULUS_PRUNE_LADDER_DAYS ({self.prune_ladder_days}) would delete the ladder "
                f"the latency sweep reads (OCULUS_SWEEP_HOURS: {self.sweep_hours:g} h)"
            )
        return self

    @property
    def ladder_delays_ms(self) -> tuple[int, ...]:
        return tuple(sorted({round(float(p) * 1000) for p in self.ladder_delays_s.split(",")}))

    def public_origins(self) -> tuple[str, ...]:
        """Returns the origins the dashboard is served at (OCULUS_PUBLIC_ORIGIN, or where
        nginx listens); ValueError when nginx listens on every address and none is set."""
        if self.public_origin:
            return self.public_origin
        if self.http_host in ALL_ADDRESSES:
            raise ValueError(
                f"OCULUS_HTTP_HOST is {self.http_host!r} (every address): set "
                "OCULUS_PUBLIC_ORIGIN to the URL browsers use, e.g. http://192.0.2.10:8080"
            )
        names = [self.http_host, *filter(None, [LOOPBACK_ALIASES.get(self.http_host)])]
        named = [f"[{n}]" if ":" in n else n for n in names]
        return tuple(origin(f"http://{n}:{self.http_port}") for n in named)

    def public_hosts(self) -> tuple[str, ...]:
        """Returns the host names of the public origins (what nginx answers to)."""
        hosts = (urllib.parse.urlsplit(o).hostname or "" for o in self.public_origins())
        return tuple(dict.fromkeys(f"[{h}]" if ":" in h else h for h in hosts))

    @field_validator("order_filled_topic_v1", "order_filled_topic_v2", "positions_converted_topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        if len(value) != 66 or not value.startswith("0x"):
            raise ValueError(f"not a 32-byte topic: {value!r}")
        int(value, 16)
        return value.lower()

    @field_validator("rate_limit_paths")
    @classmethod
    def _check_path_limits(cls, value: str) -> str:
        parse_path_limits(value)
        return value

    def path_limits(self) -> dict[str, dict[str, tuple[float, int]]]:
        """`rate_limit_paths` by upstream: {'data_api': {'/trades': (rps, burst)}}."""
        return parse_path_limits(self.rate_limit_paths)

    @field_validator(
        "data_api_url",
        "clob_url",
        "gamma_url",
        "chain_ws_url",
        "clob_ws_url",
        "rtds_ws_url",
        "telegram_api_url",
    )
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def pgdata(self) -> Path:
        return self.var_dir / "pgdata"

    @property
    def backups(self) -> Path:
        return self.backup_dir or self.var_dir / "backups"


@functools.cache
def get() -> Settings:
    """Returns the process-wide settings, read once from the environment."""
    return Settings()
