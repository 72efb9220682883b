"""``python -m runner serve`` (and ``python -m runner.server``): arguments, then :func:`serve`.

The store is ``--db``, else ``RUNNER_DB``, else ``.runner/runner.db`` under the working
directory; the API keys are every ``--api-key``, else the comma-separated ``RUNNER_API_KEYS``.
"""

from __future__ import annotations

import argparse
import sys

from runner.errors import RunnerError

__all__ = ["build_parser", "serve_main"]


def build_parser(prog: str = "python -m runner serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve the runner's results over the Parea REST API (under /api/parea/v1).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default: %(default)s)")
    parser.add_argument(
        "--db",
        default=None,
        help="store to serve: a SQLite file or postgresql://USER:PASS@HOST:5432/DB (default: $RUNNER_DB, "
        "else .runner/runner.db)",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        default=None,
        metavar="KEY",
        help="accept this key in x-api-key; repeat for several tenants (default: $RUNNER_API_KEYS, "
        "comma-separated). Without a key the server binds only loopback addresses",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default: %(default)s)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="HOST",
        help="also answer requests whose Host header is HOST (repeat; '*.example.com' wildcards; '*' turns the "
        "check off). Loopback names and the bound address are always allowed (default: $RUNNER_ALLOWED_HOSTS, "
        "comma-separated)",
    )
    parser.add_argument(
        "--header-timeout", type=float, default=10.0, metavar="S",
        help="close a connection whose request headers take longer than this (default: %(default)s)",
    )
    parser.add_argument(
        "--body-timeout", type=float, default=30.0, metavar="S",
        help="answer 408 to a request body silent this long, or slower than 1 KB/s after it (default: %(default)s)",
    )
    parser.add_argument(
        "--max-connections", type=int, default=512, metavar="N",
        help="close new connections beyond N open ones (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes on the port (default: %(default)s; more than one needs a PostgreSQL --db)",
    )
    parser.add_argument(
        "--no-migrate",
        dest="migrate",
        action="store_false",
        help="do not upgrade a PostgreSQL database's schema on start (refuse an outdated one): run "
        "`python -m runner db upgrade` yourself",
    )
    return parser


def serve_main(argv: list[str], *, prog: str = "python -m runner serve") -> int:
    """Run ``serve`` with command-line arguments; the exit code (2 for a bad setup)."""
    from runner.server import serve
    from runner.settings import Settings

    args = build_parser(prog).parse_args(argv)
    try:
        settings = Settings.from_env()
        keys = args.api_key
        if keys is None:
            keys = list(settings.api_keys)
        if any(not k.strip() for k in keys):
            print(f"{prog}: error: --api-key must not be empty", file=sys.stderr)
            return 2
        hosts = args.allowed_host
        if hosts is None:
            hosts = list(settings.allowed_hosts)
        serve(
            allowed_hosts=hosts,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            max_connections=args.max_connections,
            host=args.host,
            port=args.port,
            db=args.db or settings.db_path,
            api_keys=keys,
            log_level=args.log_level,
            access_log=args.access_log,
            workers=args.workers,
            migrate=args.migrate,
        )
    except RunnerError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(serve_main(sys.argv[1:], prog="python -m runner.server"))
