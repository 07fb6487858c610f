"""One admin: a scrypt password hash, and session cookies signed with HMAC.

nginx asks `GET /api/auth/check` (auth_request) before it serves any page, chart, JSON
or write, so checking a session must be cheap: it is one HMAC and a look-up in the
in-memory list of sessions ended by a logout (`api.sessions`), no database wait, no
password hash. The key is derived from the secret key *and* the password hash, so
changing the password ends every session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from common.runtime import settings

COOKIE = "oculus_session"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CookieTwice(ValueError):
    """The request names the session cookie more than once."""


def session_cookies(headers: list[str]) -> list[str]:
    """Returns every value of the session cookie in the request's Cookie headers, exactly
    as sent (no unquoting). Names are matched without regard to case and ',' separates
    too, as in nginx's own cookie lookup, so no form nginx reads as the session cookie
    escapes the count."""
    return [
        value.strip()
        for header in headers
        for part in re.split(r"[;,]", header)
        for name, eq, value in [part.partition("=")]
        if eq and name.strip().lower() == COOKIE
    ]


def session_cookie(headers: list[str]) -> str | None:
    """Returns the one session cookie's value (None without one). Raises CookieTwice
    when the name appears more than once: nginx keys its check cache on the first,
    Starlette reads the last, so such a header has no one meaning."""
    found = session_cookies(headers)
    if len(found) > 1:
        raise CookieTwice(f"the {COOKIE} cookie was sent more than once")
    return found[0] if found else None


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Returns `scrypt$N$r$p$salt$digest` for the password."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Returns whether the password matches the stored hash (False on a malformed one)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = _unb64(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=128 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def _read_or_create(path: Path, make: str | None) -> str | None:
    """Returns the stripped file content; creates it (mode 0600) from `make` if absent."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if make is None:
            return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make + "\n")
    return make


def password_file(s: settings.Settings) -> Path:
    return s.var_dir / "admin.passwd"


@dataclass(frozen=True)
class Session:
    """What a valid session cookie says: its id and when it expires (unix seconds)."""

    id: str
    expires: float


@dataclass(frozen=True)
class Admin:
    """The admin's credential and the key sessions are signed with."""

    user: str
    password_hash: str | None
    key: bytes
    ttl_s: float

    @classmethod
    def from_settings(cls, s: settings.Settings) -> Admin:
        stored = s.admin_password_hash or _read_or_create(password_file(s), None)
        secret = s.secret_key or _read_or_create(
            s.var_dir / "secret.key", secrets.token_urlsafe(32)
        )
        assert secret is not None
        key = hashlib.sha256(f"{secret}\0{stored or ''}".encode()).digest()
        return cls(user=s.admin_user, password_hash=stored, key=key, ttl_s=s.session_ttl_s)

    def check_login(self, user: str, password: str) -> bool:
        """Returns whether user and password are the admin's (always False without one)."""
        if self.password_hash is None:
            return False
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        return verify_password(password, self.password_hash) and user_ok

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())

    def issue(self, now: float) -> str:
        """Returns a session token valid for ttl_s from `now` (unix seconds)."""
        body = f"v1.{int(now + self.ttl_s)}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._sign(body)}"

    def session(self, token: str | None, now: float) -> Session | None:
        """Returns the session, if the token is one we issued, unexpired, for this
        password (whether it was ended since is `sessions.Revoked`'s to say)."""
        if not token or len(token) > 200 or self.password_hash is None:
            return None
        body, _, signature = token.rpartition(".")
        parts = body.split(".")
        if len(parts) != 3 or parts[0] != "v1" or not parts[1].isdigit():
            return None
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        expires = int(parts[1])
        return Session(parts[2], expires) if expires > now else None

    def valid(self, token: str | None, now: float) -> bool:
        """Returns whether the token is one we issued, unexpired, for this password."""
        return self.session(token, now) is not None


def set_password(s: settings.Settings, password: str) -> Path:
    """Writes the password's hash to var/admin.passwd (mode 0600); returns the path."""
    path = password_file(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(hash_password(password) + "\n")
    os.replace(tmp, path)
    return path
