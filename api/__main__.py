"""`python -m api`: serve the write API (uvicorn, loopback); `python -m api passwd`: set
the admin's password (read from stdin, or a random one printed once)."""

from __future__ import annotations

import argparse
import secrets
import sys

from api import auth
from common.runtime import jobs, settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m api", description=__doc__)
    sub = p.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the API (the default)")
    serve.add_argument("--database-url", help="default: DATABASE_URL or the embedded server")
    pw = sub.add_parser("passwd", help="set the admin's password in var/admin.passwd")
    pw.add_argument("--random", action="store_true", help="generate one and print it")
    pw.add_argument("--hash-only", action="store_true", help="print the hash, write nothing")
    args = p.parse_args(argv)
    s = settings.get()
    if args.command == "passwd":
        if args.random:
            password = secrets.token_urlsafe(12)
        else:
            password = sys.stdin.readline().rstrip("\n")
            if len(password) < 8:
                print("passwd: give a password of at least 8 characters on stdin", file=sys.stderr)
                return 2
        if args.hash_only:
            print(auth.hash_password(password))
            return 0
        path = auth.set_password(s, password)
        print(f"admin password set in {path}" + (f": {password}" if args.random else ""))
        return 0
    import uvicorn

    from api import app

    jobs.setup_logging(s)
    application = app.create_app(s, getattr(args, "database_url", None))
    uvicorn.run(application, host=s.api_host, port=s.api_port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
