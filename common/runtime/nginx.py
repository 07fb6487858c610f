"""A private nginx in front of public/ and the write API (`nginx/oculus.conf.template`).

`python -m common.runtime.nginx render` writes var/nginx/nginx.conf and prints its path;
`check` renders and runs `nginx -t`; `run` renders and becomes nginx in the foreground
(what supervisord starts). Every path nginx writes is under the prefix (var/nginx/), so
it runs with or without root.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import string
import subprocess
import sys
from pathlib import Path

from common.runtime import settings

TEMPLATE = settings.ROOT / "nginx" / "oculus.conf.template"
TEMP_DIRS = ("tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi", "cache")
AUTH_CACHE_S = 5  # how long nginx trusts a session check
INSTALL_HINT = "nginx is not installed: run `make system-deps` (as root), or apt-get install nginx"
# Paths go into the config unquoted: refuse what nginx would read as syntax or a variable.
_UNSAFE = re.compile(r"[\s;{}$\"'#\\]")


# string.Template's pattern with only the braced form, upper case; the others never match.
_PLACEHOLDER = r"""
\$(?:
  (?P<escaped>(?!)) | (?P<named>(?!)) | \{(?P<braced>[A-Z][A-Z0-9_]*)\} | (?P<invalid>(?!))
)
"""


class ConfigTemplate(string.Template):
    """Only `${UPPER_CASE}` is a placeholder; nginx's `$variables` pass through."""

    flags = re.NOFLAG
    pattern = _PLACEHOLDER  # type: ignore[assignment]  # Template compiles it


class NginxMissing(RuntimeError):
    pass


def find() -> str | None:
    """Returns the nginx binary (PATH, then /usr/sbin, often not on a user's PATH)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def _path(value: Path) -> str:
    text = str(value)
    if _UNSAFE.search(text):
        raise ValueError(f"nginx config: path with spaces or special characters: {text!r}")
    return text


def _host(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]", name):
        raise ValueError(f"nginx config: not a host name nginx can serve: {name!r}")
    return name


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def auth_cache_directives(seconds: int) -> str:
    """Returns the /_oculus_auth location's cache directives (a comment when 0)."""
    if seconds <= 0:
        return "# session checks are not cached"
    return (
        "proxy_cache oculus_auth;\n"
        "            proxy_cache_key $http_cookie;\n"
        "            proxy_no_cache $oculus_no_session;\n"
        "            proxy_cache_bypass $oculus_no_session;\n"
        f"            proxy_cache_valid 204 {seconds}s;"
    )


def render(
    s: settings.Settings,
    *,
    prefix: Path | None = None,
    listen_port: int | None = None,
    api_port: int | None = None,
    public_dir: Path | None = None,
    auth_cache_s: int = AUTH_CACHE_S,
) -> Path:
    """Writes prefix/nginx.conf (default prefix: var/nginx) and the temp dirs nginx
    needs; returns the config's path."""
    prefix = (prefix or s.var_dir / "nginx").resolve()
    public = (public_dir or s.public_dir).resolve()
    for sub in TEMP_DIRS:
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # Root starts nginx only in CI and local runs (make run, the tests), where the
        # checkout is root's; the workers must read public/, so they stay root. A
        # production install uses the distribution's nginx (workers: www-data).
        user_line = "user root root;"
    else:
        user_line = "# not root: the workers run as the user who started nginx"
    text = ConfigTemplate(TEMPLATE.read_text()).substitute(
        USER_LINE=user_line,
        PREFIX=_path(prefix),
        PUBLIC_DIR=_path(public),
        LISTEN=_address(s.http_host, listen_port or s.http_port),
        SERVER_NAMES=" ".join(_host(h) for h in s.public_hosts()),
        API_UPSTREAM=_address(s.api_host, api_port or s.api_port),
        AUTH_CACHE=auth_cache_directives(auth_cache_s),
    )
    conf = prefix / "nginx.conf"
    tmp = conf.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, conf)
    return conf


def command(conf: Path, *extra: str) -> list[str]:
    """Returns the argv that runs nginx with this config in the foreground."""
    binary = find()
    if binary is None:
        raise NginxMissing(INSTALL_HINT)
    prefix = str(conf.parent)
    return [binary, "-p", prefix, "-c", str(conf), "-e", "stderr", "-g", "daemon off;", *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.runtime.nginx", description=__doc__)
    parser.add_argument("action", choices=("render", "check", "run"))
    parser.add_argument("--prefix", type=Path, help="default: var/nginx")
    parser.add_argument("--port", type=int, help="listen port (default: OCULUS_HTTP_PORT)")
    parser.add_argument("--api-port", type=int, help="default: OCULUS_API_PORT")
    parser.add_argument("--public-dir", type=Path, help="default: OCULUS_PUBLIC_DIR")
    args = parser.parse_args(argv)
    s = settings.get()
    try:
        conf = render(
            s,
            prefix=args.prefix,
            listen_port=args.port,
            api_port=args.api_port,
            public_dir=args.public_dir,
        )
    except ValueError as exc:  # a setting nginx cannot be configured from
        print(f"nginx: {exc}", file=sys.stderr)
        return 2
    if args.action == "render":
        print(conf)
        return 0
    try:
        argv_nginx = command(conf, *(["-t"] if args.action == "check" else []))
    except NginxMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.action == "check":
        return subprocess.run(argv_nginx, check=False).returncode
    os.execvp(argv_nginx[0], argv_nginx)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
