"""One typed settings class; every setting is in README.md's table and vice versa."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from common.runtime import settings


def env_names() -> set[str]:
    return {settings.env_names(name)[0] for name in settings.Settings.model_fields}


def readme_names() -> set[str]:
    text = (settings.ROOT / "README.md").read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section, flags=re.MULTILINE))


def test_readme_documents_every_setting_and_no_other() -> None:
    assert readme_names() == env_names()


def test_base_urls_and_addresses_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OCULUS_DATA_API_URL", "http://127.0.0.1:8090/data-api/")
    monkeypatch.setenv("OCULUS_EXCHANGE_ADDRESSES_V2", " 0x" + "AB" * 20 + ", 0x" + "cd" * 20)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    s = settings.Settings()
    assert s.data_api_url == "http://127.0.0.1:8090/data-api"
    assert s.exchange_addresses_v2 == ("0x" + "ab" * 20, "0x" + "cd" * 20)
    assert s.database_url == "postgresql://u@h/db"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OCULUS_EXCHANGE_ADDRESSES_V1", "0x1234"),
        ("OCULUS_ORDER_FILLED_TOPIC_V2", "0xnothex"),
        ("OCULUS_RATE_LIMIT_RPS", "0"),
        ("OCULUS_DB_POOL_MAX", "many"),
    ],
)
def test_bad_settings_fail_loudly(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        settings.Settings()


@pytest.mark.parametrize(
    ("host", "port", "origins"),
    [
        ("127.0.0.1", 8080, ("http://127.0.0.1:8080", "http://localhost:8080")),
        ("localhost", 8080, ("http://localhost:8080", "http://127.0.0.1:8080")),
        ("::1", 8080, ("http://[::1]:8080", "http://localhost:8080")),
        ("127.0.0.1", 80, ("http://127.0.0.1", "http://localhost")),
        ("oculus.lan", 8080, ("http://oculus.lan:8080",)),
    ],
)
def test_the_public_origin_defaults_to_where_nginx_listens(
    host: str, port: int, origins: tuple[str, ...]
) -> None:
    assert settings.Settings(http_host=host, http_port=port).public_origins() == origins


def test_the_public_origin_as_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OCULUS_PUBLIC_ORIGIN", " HTTPS://Oculus.Example.com:443/, http://10.0.0.5:8080"
    )
    s = settings.Settings(http_host="0.0.0.0")
    assert s.public_origins() == ("https://oculus.example.com", "http://10.0.0.5:8080")
    assert s.public_hosts() == ("oculus.example.com", "10.0.0.5")


@pytest.mark.parametrize(
    "value",
    ["oculus.example.com", "ftp://x", "https://x/path", "https://user@x", "https://x?q", "http://"],
)
def test_a_public_origin_is_scheme_host_and_port_only(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("OCULUS_PUBLIC_ORIGIN", value)
    with pytest.raises(ValidationError):
        settings.Settings()


def test_listening_on_every_address_needs_the_public_origin() -> None:
    for host in ("0.0.0.0", "::"):
        with pytest.raises(ValueError, match="OCULUS_PUBLIC_ORIGIN"):
            settings.Settings(http_host=host).public_origins()
