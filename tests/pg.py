"""A throwaway PostgreSQL server for the tests, and the ``db`` fixtures that run a test on both stores.

The cluster is made once per session with ``initdb`` in a temporary directory, as the
``postgres`` user when the tests run as root (PostgreSQL refuses root), listening on a free
loopback port only; it is stopped and deleted at the end. Each test gets a schema of its own
(``search_path`` in the URL), so tests never see each other's rows.

Without PostgreSQL installed the PostgreSQL half of the tests is skipped with a message; with
``CI=true`` it fails instead (CI installs Debian's ``postgresql``: see ``.ci/run``).

>>> def test_x(db):  # doctest: +SKIP
...     store = Store(db)  # a SQLite file, then a PostgreSQL URL
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PgCluster", "db", "db_module", "pg", "pg_bin"]

_counter = itertools.count()


def pg_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (``$PG_BIN``, else Debian's newest)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """A running throwaway cluster: :meth:`url` of a fresh schema in its ``runner`` database."""

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="runner-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.root, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        settings = [
            "-c listen_addresses=127.0.0.1", f"-c port={self.port}", f"-c unix_socket_directories={self.root}",
            "-c max_connections=200", "-c shared_buffers=64MB",
        ]
        if not durable:  # test data: speed over crash safety of the cluster itself
            settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60",
                  "-o", " ".join(settings), "start")
        self.base = f"postgresql://postgres@127.0.0.1:{self.port}"
        self._psql("CREATE DATABASE runner")

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bin_dir / program), *args], check=True, capture_output=True,
                       timeout=120)

    def _psql(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(f"{self.base}/{database}", autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def database(self) -> str:
        """The URL of a new, empty database."""
        name = f"t{os.getpid()}_{next(_counter)}"
        self._psql(f"CREATE DATABASE {name}")
        return f"{self.base}/{name}"

    def url(self) -> str:
        """The URL of a new, empty schema (cheaper than a database)."""
        name = f"s{os.getpid()}_{next(_counter)}"
        self._psql(f"CREATE SCHEMA {name}", "runner")
        return f"{self.base}/runner?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(durable: bool = False) -> PgCluster | str:
    """A started cluster, or why there is none."""
    bin_dir = pg_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        return "PostgreSQL is not installed (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    deadline = time.monotonic() + 5
    while True:
        try:
            return PgCluster(bin_dir, durable=durable)
        except subprocess.CalledProcessError as exc:  # a port taken meanwhile: try another
            if time.monotonic() > deadline:
                return f"cannot start PostgreSQL: {exc.stderr.decode(errors='replace')[-500:]}"


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """The session's PostgreSQL cluster (skips the test without PostgreSQL, fails under CI=true)."""
    cluster = start_cluster()
    if isinstance(cluster, str):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true needs PostgreSQL: {cluster}")
        pytest.skip(cluster)
    try:
        yield cluster
    finally:
        cluster.stop()


def _location(request: pytest.FixtureRequest, folder: Path) -> str | Path:
    if request.param == "sqlite":
        return folder / "runner.db"
    cluster: PgCluster = request.getfixturevalue("pg")
    return cluster.url()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """A new store location: a SQLite file in ``tmp_path``, then a new PostgreSQL schema."""
    return _location(request, tmp_path)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_module(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str | Path:
    """:func:`db` for module-scoped fixtures."""
    return _location(request, tmp_path_factory.mktemp("db"))
