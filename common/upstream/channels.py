"""The notification channels (SPEC §11): one sender per channel type, each taking the
channel (its rules.yaml entry) and the messages of one delivery, and returning an
`Outcome` (ok, status, bounded error, the wait a 429 asked for). One request per
attempt: the outbox (common/store/outbox.py) retries, backs off and rate-limits.

Secrets come from the environment only: a channel's options name the variables
(`secret_env`, `webhook_url_env`, `bot_token_env`, `username_env`, `password_env`); a
generic webhook may give a plain `url`. A channel whose type, option or variable is
wrong is reported as misconfigured on its attempts, and nothing is sent.

- log: one JSON line per message into `<var>/log/alerts.jsonl` (and the job's log).
- webhook: POST of the message as JSON {id, rule, severity, state, labels, value,
  message, at}; `X-Oculus-Signature: sha256=<hex HMAC-SHA256 of the body>` when
  `secret_env` is set; `X-Oculus-Id` carries the id.
- slack: incoming webhook, {"text": …} (mrkdwn, `&<>` escaped).
- discord: execute-webhook with one embed, coloured by severity (green when resolved),
  within Discord's embed limits; mentions disabled.
- telegram: Bot API sendMessage {chat_id, text} (plain text, ≤ 4096 characters).
- email: SMTP (starttls, ssl or none; optional AUTH), one message for the batch."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import smtplib
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.domain import delivery, rules
from common.runtime import settings as settings_mod
from common.upstream import http

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("oculus.alerts")

ANSWER_KEEP_BYTES = 4096  # what an error keeps of a receiver's answer
SLACK_TEXT_MAX = 3000
TELEGRAM_TEXT_MAX = 4096  # sendMessage: 1-4096 characters
# Discord's embed limits (Message Resource → Embed Limits), in characters.
DISCORD = {
    "title": 256,
    "description": 4096,
    "fields": 25,
    "field_name": 256,
    "field_value": 1024,
    "footer": 2048,
    "total": 6000,
}
DISCORD_COLOURS = {"info": 0x3498DB, "warn": 0xFFBF00, "error": 0xE74C3C, "critical": 0x8B0000}
DISCORD_RESOLVED = 0x2ECC71
SMTP_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


class Misconfigured(ValueError):
    """The channel cannot be used as written (type, option, environment variable)."""


def _option(channel: rules.Channel, key: str, *, required: bool = True) -> str | None:
    value = channel.options.get(key)
    if value is None or value == "":
        if required:
            raise Misconfigured(f"channel {channel.name!r}: option {key!r} is missing")
        return None
    if not isinstance(value, str | int):
        raise Misconfigured(f"channel {channel.name!r}: option {key!r} is not a string")
    return str(value)


def _secret(
    channel: rules.Channel, key: str, env: Mapping[str, str], *, required: bool = True
) -> str | None:
    """The value of the environment variable the option `key` names."""
    name = _option(channel, key, required=required)
    if name is None:
        return None
    value = env.get(name)
    if not value:
        raise Misconfigured(
            f"channel {channel.name!r}: environment variable {name} ({key}) is not set"
        )
    return value


def _url(channel: rules.Channel, url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Misconfigured(f"channel {channel.name!r}: not an http(s) URL")  # never echo it
    return url


def redact(text: str | None, channel: rules.Channel, env: Mapping[str, str]) -> str | None:
    """Returns `text` with the channel's secrets (the values of its `*_env` variables,
    which may be in a URL an error quotes) replaced by `***`."""
    if text is None:
        return None
    for key, name in channel.options.items():
        secret = env.get(name) if key.endswith("_env") and isinstance(name, str) else None
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def problems(channel: rules.Channel, env: Mapping[str, str] | None = None) -> list[str]:
    """Returns what is wrong with a channel as configured (empty: usable), for
    `rules --check` and the Alerts page. Reads no network."""
    env = os.environ if env is None else env
    try:
        _check(channel, env)
    except Misconfigured as exc:
        return [str(exc)]
    return []


def _check(channel: rules.Channel, env: Mapping[str, str]) -> None:
    if channel.problem:
        raise Misconfigured(f"rules.yaml: {channel.problem}")
    kind = channel.type
    if kind == "log":
        return
    if kind == "webhook":
        if channel.options.get("url") is not None:
            _url(channel, _option(channel, "url") or "")
        else:
            _url(channel, _secret(channel, "webhook_url_env", env) or "")
        _secret(channel, "secret_env", env, required=False)
    elif kind in ("slack", "discord"):
        _url(channel, _secret(channel, "webhook_url_env", env) or "")
    elif kind == "telegram":
        _secret(channel, "bot_token_env", env)
        _option(channel, "chat_id")
    elif kind == "email":
        _email_settings(channel, env)
    else:
        raise Misconfigured(
            f"channel {channel.name!r}: unknown type {kind!r} "
            f"(one of {', '.join(rules.CHANNEL_TYPES)})"
        )


class Senders:
    """Sends messages on channels; one per process, holding its one HTTP client (made
    at the first HTTP send). `env` is where secrets are read (the process's
    environment); `log_path` where the log channel appends its JSON lines."""

    def __init__(
        self,
        s: settings_mod.Settings,
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        log_path: Path | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = s
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.client = http.LazyClient(lambda: http.make_client(s, transport))
        self.log_path = log_path or s.var_dir / "log" / "alerts.jsonl"
        self.monotonic = monotonic

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Senders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self, channel: rules.Channel, messages: Sequence[delivery.Message]
    ) -> delivery.Outcome:
        """Delivers `messages` on `channel` (several only for email: one message) and
        returns the outcome; never raises for a receiver's or a configuration's fault."""
        import httpx  # loaded with the client: this only binds the name

        began = self.monotonic()
        try:
            _check(channel, self.env)
            if len(messages) != 1 and channel.type != "email":
                raise ValueError(f"a {channel.type} delivery carries one message")
            outcome = self._dispatch(channel, list(messages))
        except Misconfigured as exc:
            outcome = delivery.Outcome(ok=False, error=str(exc), misconfigured=True)
        except httpx.HTTPError as exc:
            outcome = delivery.Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
        except smtplib.SMTPResponseException as exc:
            error = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            outcome = delivery.Outcome(ok=False, status=exc.smtp_code, error=f"SMTP: {error}")
        except (smtplib.SMTPException, OSError) as exc:
            outcome = delivery.Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
        took = round((self.monotonic() - began) * 1_000_000)
        return delivery.Outcome(
            outcome.ok,
            outcome.status,
            redact(outcome.error, channel, self.env),
            outcome.retry_after_s,
            took,
            outcome.misconfigured,
        ).bounded()

    def _dispatch(
        self, channel: rules.Channel, messages: list[delivery.Message]
    ) -> delivery.Outcome:
        kind = channel.type
        if kind == "log":
            return self._log(messages)
        if kind == "email":
            return send_email(channel, messages, self.env, self.settings.http_timeout_s)
        msg = messages[0]
        if kind == "webhook":
            url = _option(channel, "url", required=False) or _secret(
                channel, "webhook_url_env", self.env
            )
            body = json.dumps(msg.payload(), separators=(",", ":"), ensure_ascii=False).encode()
            headers = {"content-type": "application/json", "x-oculus-id": msg.id}
            secret = _secret(channel, "secret_env", self.env, required=False)
            if secret is not None:
                headers["x-oculus-signature"] = signature(secret.encode(), body)
            return self._post(url or "", body, headers)
        if kind == "slack":
            body = json.dumps({"text": slack_text(msg)}).encode()
            return self._post(_secret(channel, "webhook_url_env", self.env) or "", body)
        if kind == "discord":
            body = json.dumps(discord_body(msg)).encode()
            return self._post(_secret(channel, "webhook_url_env", self.env) or "", body)
        token = _secret(channel, "bot_token_env", self.env)
        url = f"{self.settings.telegram_api_url}/bot{token}/sendMessage"
        sent = {"chat_id": _option(channel, "chat_id"), "text": telegram_text(msg)}
        return self._post(url, json.dumps(sent).encode(), telegram=True)

    def _log(self, messages: list[delivery.Message]) -> delivery.Outcome:
        lines = "".join(json.dumps(m.payload(), ensure_ascii=False) + "\n" for m in messages)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # one write in append mode: lines of concurrent writers never interleave
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
        for line in lines.splitlines():
            log.info("alert %s", line)
        return delivery.Outcome(ok=True)

    def _post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        telegram: bool = False,
    ) -> delivery.Outcome:
        """POSTs one JSON body; returns the outcome from the answer (its first bytes)."""
        client = self.client.instance()
        sent = {"content-type": "application/json", **(headers or {})}
        with client.stream("POST", url, content=body, headers=sent) as answer:
            data = bytearray()
            for chunk in answer.iter_bytes():
                data += chunk
                if len(data) >= ANSWER_KEEP_BYTES:
                    break
            text = bytes(data[:ANSWER_KEEP_BYTES]).decode(errors="replace")
            status = answer.status_code
            retry_after = _retry_after(answer.headers.get("retry-after"), text)
        ok = 200 <= status < 300
        if telegram and ok:
            ok = _json(text).get("ok") is True
        if ok:
            return delivery.Outcome(ok=True, status=status)
        error = f"HTTP {status}: {' '.join(text.split())[:300]}"
        return delivery.Outcome(ok=False, status=status, error=error, retry_after_s=retry_after)


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _retry_after(header: str | None, body: str) -> float | None:
    """The wait a receiver asked for: the Retry-After header (seconds or an HTTP-date),
    else Discord's `retry_after` or Telegram's `parameters.retry_after` in the body.
    Not capped here: the outbox holds every wait to OCULUS_NOTIFY_BACKOFF_CAP_S."""
    if header is not None:
        try:
            seconds = float(header)
        except ValueError:
            return http.parse_retry_after(header, datetime.now(UTC))
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    answer = _json(body)
    params = answer.get("parameters")
    nested = params.get("retry_after") if isinstance(params, dict) else None
    for value in (answer.get("retry_after"), nested):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value) and value >= 0:
            return float(value)
    return None


def signature(secret: bytes, body: bytes) -> str:
    """Returns the X-Oculus-Signature of `body`: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def slack_text(msg: delivery.Message) -> str:
    """Slack mrkdwn: the headline in bold, then the text; &, < and > escaped."""

    def esc(s: str) -> str:
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    rest = msg.text().split("\n", 1)[1]
    return delivery.bound(f"*{esc(msg.headline())}*\n{esc(rest)}", SLACK_TEXT_MAX)


def units(text: str) -> int:
    """Returns the length of `text` in UTF-16 code units, as Discord and Telegram count
    (an emoji outside the BMP is two)."""
    return len(text.encode("utf-16-le")) // 2


def cut(text: str, limit: int) -> str:
    """Returns `text` within `limit` UTF-16 units (≥ 1), an ellipsis marking a cut."""
    if units(text) <= limit:
        return text
    out, used = [], 1  # the ellipsis
    for char in text:
        used += 2 if ord(char) > 0xFFFF else 1
        if used > limit:
            break
        out.append(char)
    return "".join(out) + "…"


def telegram_text(msg: delivery.Message) -> str:
    """Plain text (no parse_mode: nothing to escape), within Telegram's limit."""
    return cut(msg.text(), TELEGRAM_TEXT_MAX)


def discord_body(msg: delivery.Message) -> dict[str, Any]:
    """The execute-webhook body: one embed within Discord's limits (each part's, and
    6000 in all: the description leaves 2000 for the fields, shared evenly), and
    mentions disabled."""
    title = cut(msg.headline(), DISCORD["title"])
    footer = cut(f"id {msg.id}", DISCORD["footer"])
    left = DISCORD["total"] - units(title) - units(footer)
    description = cut(msg.message or msg.headline(), min(DISCORD["description"], left - 2000))
    left -= units(description)
    pairs = [("value", f"{msg.value:g}")] if msg.value is not None else []
    fields: list[dict[str, Any]] = []
    items = [*pairs, *msg.labels.items()][: DISCORD["fields"]]
    for i, (key, val) in enumerate(items):
        share = left // (len(items) - i)  # each field an even share of what is left
        if share < 8:
            break
        name = cut(key or "-", min(DISCORD["field_name"], max(4, share // 3)))
        value = cut(val or "-", min(DISCORD["field_value"], share - units(name)))
        left -= units(name) + units(value)
        fields.append({"name": name, "value": value, "inline": True})
    embed: dict[str, Any] = {
        "title": title,
        "description": description,
        "color": DISCORD_RESOLVED if msg.state == "RESOLVED" else DISCORD_COLOURS[msg.severity],
        "fields": fields,
        "footer": {"text": footer},
        "timestamp": msg.at,
    }
    return {"embeds": [embed], "allowed_mentions": {"parse": []}}


def _email_settings(channel: rules.Channel, env: Mapping[str, str]) -> dict[str, Any]:
    security = _option(channel, "security", required=False) or "starttls"
    if security not in SMTP_PORTS:
        raise Misconfigured(
            f"channel {channel.name!r}: security {security!r} is not starttls, ssl or none"
        )
    port_text = _option(channel, "port", required=False)
    try:
        port = int(port_text) if port_text is not None else SMTP_PORTS[security]
    except ValueError:
        raise Misconfigured(
            f"channel {channel.name!r}: port {port_text!r} is not a number"
        ) from None
    to = channel.options.get("to")
    rcpt = [to] if isinstance(to, str) else to
    if (
        not isinstance(rcpt, list)
        or not rcpt
        or not all(isinstance(a, str) and "@" in a for a in rcpt)
    ):
        raise Misconfigured(
            f"channel {channel.name!r}: option 'to' is not an address or a list of addresses"
        )
    sender = _option(channel, "from")
    if "@" not in (sender or ""):
        raise Misconfigured(f"channel {channel.name!r}: option 'from' is not an address")
    user = _secret(channel, "username_env", env, required=False)
    password = _secret(channel, "password_env", env, required=user is not None)
    if password is not None and user is None:
        raise Misconfigured(f"channel {channel.name!r}: password_env without username_env")
    return {
        "host": _option(channel, "host"),
        "port": port,
        "security": security,
        "to": rcpt,
        "from": sender,
        "user": user,
        "password": password,
        "ca_file": _option(channel, "ca_file", required=False),
    }


def email_message(
    messages: Sequence[delivery.Message], sender: str, to: Sequence[str]
) -> EmailMessage:
    """One email for a batch: the subject sums it up (count, worst severity, or the
    headline of a lone alert); the body lists each alert with its id. The Message-ID
    is derived from the ids, so a resent batch carries the same one."""
    ids = [m.id for m in messages]
    mail = EmailMessage()
    if len(messages) == 1:
        subject = f"[Oculus] {messages[0].headline()}"
    else:
        firing = sum(m.state == "FIRING" for m in messages)
        subject = (
            f"[Oculus] {len(messages)} alerts, worst {delivery.worst(list(messages))}"
            f" ({firing} firing, {len(messages) - firing} resolved)"
        )
    mail["Subject"] = subject
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = formatdate(usegmt=True)
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
    mail["Message-ID"] = f"<oculus.{digest}@{sender.rsplit('@', 1)[1]}>"
    mail["X-Oculus-Ids"] = " ".join(ids)
    blocks = [m.text() for m in messages]
    mail.set_content(f"{len(messages)} alert(s)\n\n" + "\n\n".join(blocks) + "\n")
    return mail


def send_email(
    channel: rules.Channel,
    messages: Sequence[delivery.Message],
    env: Mapping[str, str],
    timeout_s: float,
) -> delivery.Outcome:
    """Sends one email for `messages`; refused recipients (some, not all) are noted."""
    conf = _email_settings(channel, env)
    context = ssl.create_default_context(cafile=conf["ca_file"])
    mail = email_message(messages, conf["from"], conf["to"])
    smtp: smtplib.SMTP
    if conf["security"] == "ssl":
        smtp = smtplib.SMTP_SSL(conf["host"], conf["port"], timeout=timeout_s, context=context)
    else:
        smtp = smtplib.SMTP(conf["host"], conf["port"], timeout=timeout_s)
    with smtp:
        if conf["security"] == "starttls":
            smtp.starttls(context=context)
        if conf["user"] is not None:
            smtp.login(conf["user"], conf["password"])
        refused = smtp.send_message(mail)
    if refused:
        note = "; ".join(f"{a}: {code}" for a, (code, _) in refused.items())
        return delivery.Outcome(ok=True, status=250, error=f"refused recipients: {note}")
    return delivery.Outcome(ok=True, status=250)
