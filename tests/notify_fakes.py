"""Loopback stand-ins for the notification receivers: one threaded HTTP server playing
a generic webhook, Slack's incoming webhooks, Discord's execute-webhook and Telegram's
Bot API, each checking a request against the platform's documented format and answering
as the platform does (429s with Retry-After, 5xx on demand); and an aiosmtpd server with
STARTTLS (a self-signed certificate made with openssl) and AUTH."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

WEBHOOK_KEYS = ["id", "rule", "severity", "state", "labels", "value", "message", "at"]
TELEGRAM_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{20,}$")


@dataclass
class Received:
    """One request the fake took: its platform, path, headers, raw body, and the
    problems it found with it (empty: valid)."""

    kind: str
    path: str
    headers: dict[str, str]
    body: bytes
    problems: list[str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Scripted:
    """An answer to give instead of the normal one: status, headers, body."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def check_webhook(
    body: Any, secret: bytes | None, raw: bytes, headers: dict[str, str]
) -> list[str]:
    """The contract of SPEC §11: the 8 keys, their types, the signature."""
    problems = []
    if not isinstance(body, dict) or sorted(body) != sorted(WEBHOOK_KEYS):
        return [f"keys are not {WEBHOOK_KEYS}: {sorted(body) if isinstance(body, dict) else body}"]
    for key in ("id", "rule", "severity", "state", "message", "at"):
        if not isinstance(body[key], str):
            problems.append(f"{key} is not a string")
    if body["severity"] not in ("info", "warn", "error", "critical"):
        problems.append("bad severity")
    if body["state"] not in ("FIRING", "RESOLVED"):
        problems.append("bad state")
    if not isinstance(body["labels"], dict):
        problems.append("labels is not an object")
    if not (body["value"] is None or isinstance(body["value"], int | float)):
        problems.append("value is not a number or null")
    try:
        at = datetime.fromisoformat(str(body["at"]).replace("Z", "+00:00"))
        if at.utcoffset() is None or at.utcoffset().total_seconds() != 0:  # type: ignore[union-attr]
            problems.append("at is not UTC")
    except ValueError:
        problems.append("at is not ISO 8601")
    if headers.get("x-oculus-id") not in (None, body["id"]):
        problems.append("X-Oculus-Id is not the body's id")
    if secret is not None:
        want = "sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get("x-oculus-signature", ""), want):
            problems.append("bad or missing X-Oculus-Signature")
    return problems


def check_slack(body: Any) -> list[str]:
    """Incoming webhooks: a JSON object with `text` (a non-empty string) and/or blocks."""
    if not isinstance(body, dict):
        return ["not an object"]
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return ["text missing or empty"]
    if len(text) > 40_000:
        return ["text over 40,000 characters"]
    unescaped = re.sub(r"&(amp|lt|gt);", "", text)
    if "<" in unescaped or ">" in unescaped:
        return ["<, > not escaped (Slack reads them as links and mentions)"]
    return []


def _len16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def check_discord(body: Any) -> list[str]:
    """Execute Webhook: content or embeds; each embed within the Embed Limits."""
    if not isinstance(body, dict):
        return ["not an object"]
    embeds = body.get("embeds")
    if not body.get("content") and not embeds:
        return ["neither content nor embeds"]
    problems: list[str] = []
    if not isinstance(embeds, list) or len(embeds) > 10:
        return ["embeds is not a list of at most 10"]
    total = 0
    for embed in embeds:
        limits = {"title": 256, "description": 4096}
        for key, limit in limits.items():
            value = embed.get(key)
            if value is not None and (not isinstance(value, str) or _len16(value) > limit):
                problems.append(f"embed {key} over {limit} or not a string")
            total += _len16(value or "")
        color = embed.get("color")
        if not isinstance(color, int) or not 0 <= color <= 0xFFFFFF:
            problems.append("color is not an int in 0..0xFFFFFF")
        fields = embed.get("fields", [])
        if len(fields) > 25:
            problems.append("more than 25 fields")
        for f in fields:
            name, value = f.get("name"), f.get("value")
            if not isinstance(name, str) or not name or _len16(name) > 256:
                problems.append("field name empty or over 256")
            if not isinstance(value, str) or not value or _len16(value) > 1024:
                problems.append("field value empty or over 1024")
            total += _len16(name or "") + _len16(value or "")
        footer = (embed.get("footer") or {}).get("text", "")
        if _len16(footer) > 2048:
            problems.append("footer over 2048")
        total += _len16(footer)
        if "timestamp" in embed:
            try:
                datetime.fromisoformat(embed["timestamp"].replace("Z", "+00:00"))
            except ValueError:
                problems.append("timestamp is not ISO 8601")
    if total > 6000:
        problems.append(f"embeds total {total} characters, over 6000")
    return problems


def check_telegram(path: str, body: Any) -> list[str]:
    """sendMessage: /bot<token>/sendMessage, chat_id, text of 1-4096 characters."""
    match = re.fullmatch(r"/bot([^/]+)/sendMessage", path)
    if match is None or not TELEGRAM_TOKEN.match(match.group(1)):
        return ["not /bot<token>/sendMessage with a token like 123456:ABC..."]
    if not isinstance(body, dict):
        return ["not an object"]
    problems = []
    if not isinstance(body.get("chat_id"), int | str) or body.get("chat_id") in ("", None):
        problems.append("chat_id missing")
    text = body.get("text")
    if not isinstance(text, str) or not 1 <= _len16(text) <= 4096:
        problems.append("text is not 1-4096 characters")
    if body.get("parse_mode") not in (None, "HTML", "MarkdownV2", "Markdown"):
        problems.append("bad parse_mode")
    return problems


class FakeReceivers:
    """The HTTP receivers on one loopback port. `script(kind, *answers)` queues answers
    to give instead of the normal ones; `on_receive` runs with each request before it
    is answered (the crash test kills the notifier there)."""

    def __init__(self, webhook_secret: bytes | None = None) -> None:
        self.webhook_secret = webhook_secret
        self.received: list[Received] = []
        self.scripts: dict[str, list[Scripted]] = {}
        self.on_receive: Callable[[Received], None] | None = None
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # the body right after the headers, no 40 ms stall

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeReceivers:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(self, kind: str, *answers: Scripted) -> None:
        with self.lock:
            self.scripts.setdefault(kind, []).extend(answers)

    def of(self, kind: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.kind == kind]

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        raw = req.rfile.read(int(req.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in req.headers.items()}
        path = req.path.split("?", 1)[0]
        kind = path.strip("/").split("/", 1)[0]
        if kind.startswith("bot"):
            kind = "telegram"
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if headers.get("content-type", "").split(";")[0] != "application/json":
            problems = ["content-type is not application/json"]
        elif kind == "webhook":
            problems = check_webhook(body, self.webhook_secret, raw, headers)
        elif kind == "slack":
            problems = check_slack(body)
        elif kind == "discord":
            problems = check_discord(body)
        elif kind == "telegram":
            problems = check_telegram(path, body)
        else:
            problems = [f"no receiver at {path}"]
        got = Received(kind, path, headers, raw, problems)
        with self.lock:
            self.received.append(got)
            scripted = self.scripts.get(kind, [])
            answer = scripted.pop(0) if scripted else None
        if self.on_receive is not None:
            self.on_receive(got)
        if answer is None:
            answer = self._normal(kind, problems)
        self._answer(req, answer)

    def _normal(self, kind: str, problems: list[str]) -> Scripted:
        if kind == "telegram":
            if problems:
                desc = "Bad Request: " + "; ".join(problems)
                return Scripted(400, {"ok": False, "error_code": 400, "description": desc})
            return Scripted(200, {"ok": True, "result": {"message_id": len(self.received)}})
        if problems:
            if kind == "discord":
                return Scripted(400, {"code": 50035, "message": "Invalid Form Body"})
            return Scripted(400, "invalid_payload: " + "; ".join(problems))
        if kind == "slack":
            return Scripted(200, "ok")
        return Scripted(204)

    @staticmethod
    def _answer(req: BaseHTTPRequestHandler, answer: Scripted) -> None:
        if answer.body is None:
            data = b""
        elif isinstance(answer.body, str):
            data = answer.body.encode()
        else:
            data = json.dumps(answer.body).encode()
        req.send_response(answer.status)
        for key, value in answer.headers.items():
            req.send_header(key, value)
        if answer.body is not None:
            kind = "text/plain" if isinstance(answer.body, str) else "application/json"
            req.send_header("content-type", kind)
        req.send_header("content-length", str(len(data)))
        try:
            req.end_headers()
            req.wfile.write(data)
        except OSError:  # the sender is gone (the crash test killed it)
            req.close_connection = True


def discord_429(retry_after: float) -> Scripted:
    """Discord's rate-limit answer: the wait in the body and in Retry-After."""
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
    return Scripted(429, body, {"retry-after": str(retry_after)})


def telegram_429(retry_after: int) -> Scripted:
    """The Bot API's flood-control answer: the wait in parameters.retry_after only."""
    return Scripted(
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": f"Too Many Requests: retry after {retry_after}",
            "parameters": {"retry_after": retry_after},
        },
    )


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """Returns (certificate, key) for 127.0.0.1 and localhost, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is needed to make the test certificate")
    cert, key = tmp / "smtp.crt", tmp / "smtp.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Mail:
    sender: str
    rcpt: list[str]
    message: Message
    authenticated_as: str | None
    tls: bool


class SMTPFake:
    """aiosmtpd on loopback: STARTTLS required, AUTH (PLAIN/LOGIN) with one user after
    TLS; collects each message with its envelope."""

    def __init__(self, tmp: Path, user: str = "alerts", password: str = "s3cret") -> None:
        cert, key = self_signed(tmp)
        self.cert = cert
        self.user, self.password = user, password
        self.mails: list[Mail] = []
        self.failures: list[int] = []  # SMTP codes to answer DATA with, in turn
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        fake = self

        class Handler:
            async def handle_DATA(
                self, server: SMTPServer, session: Session, envelope: Envelope
            ) -> str:
                if fake.failures:
                    code = fake.failures.pop(0)
                    return f"{code} try again later"
                fake.mails.append(
                    Mail(
                        str(envelope.mail_from),
                        [str(r) for r in envelope.rcpt_tos],
                        message_from_bytes(bytes(envelope.original_content or b"")),
                        fake.user if session.authenticated else None,
                        session.ssl is not None,
                    )
                )
                return "250 OK"

        def authenticate(
            server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and data.login.decode() == fake.user
                and data.password.decode() == fake.password
            )
            return AuthResult(success=ok, handled=False)

        self.port = free_port()
        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=True,
            authenticator=authenticate,
            auth_require_tls=True,
        )

    def __enter__(self) -> SMTPFake:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
