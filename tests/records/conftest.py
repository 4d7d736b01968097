"""Fixtures: a throwaway PostgreSQL server (real binaries), and both stores behind one fixture.

The server is started once per session from the Debian ``postgresql`` package's binaries
(``/usr/lib/postgresql/*/bin``): ``initdb`` into a temporary directory, then ``pg_ctl start`` on
a free TCP port with the unix socket in the same directory. PostgreSQL refuses to run as root, so
as root it runs as the ``postgres`` system user (or ``nobody``) through ``runuser``. Each test gets
a fresh database. Tests that need it skip (with the reason) only where the binaries are absent;
``scripts/test-deps.sh`` installs them.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harken.records.postgres import PostgresCallStore
from harken.records.sqlite import SqliteCallStore

MakeStore = Callable[[], Any]


def _pg_bin() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    def __init__(self, bindir: Path, root: Path, port: int, prefix: list[str]) -> None:
        self.bindir = bindir
        self.root = root
        self.port = port
        self.prefix = prefix
        self._dbs = itertools.count(1)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.root} port={self.port} user=harken dbname={dbname}"

    def new_database(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(self._dbs)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian "
            "'postgresql' package (scripts/test-deps.sh does)"
        )
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install -e '.[dev]')")
    root = Path(tempfile.mkdtemp(prefix="harken-pg-"))
    prefix: list[str] = []
    if os.getuid() == 0:  # initdb and postgres refuse to run as root
        user = "postgres"
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            user, entry = "nobody", pwd.getpwnam("nobody")
        os.chown(root, entry.pw_uid, entry.pw_gid)
        prefix = ["runuser", "-u", user, "--"]
    server = PgServer(bindir, root, _free_port(), prefix)
    try:
        init = subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(root / "data"),
                "-A",
                "trust",
                "-U",
                "harken",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert init.returncode == 0, f"initdb failed:\n{init.stdout}\n{init.stderr}"
        opts = (
            f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off"
        )
        started = server.pg_ctl("-l", str(root / "log"), "-w", "-t", "60", "-o", opts, "start")
        if started.returncode != 0:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            raise AssertionError(f"pg_ctl start failed:\n{started.stdout}\n{started.stderr}\n{log}")
        yield server
    finally:
        server.pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> str:
    """A fresh, empty database on the throwaway server."""
    return pg_server.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """A factory of unopened stores on one fresh database (SQLite file or PostgreSQL)."""
    stores: list[Any] = []
    if request.param == "sqlite":
        path = tmp_path / "calls.db"

        def make() -> Any:
            store = SqliteCallStore(path)
            stores.append(store)
            return store

    else:
        dsn = request.getfixturevalue("pg_dsn")

        def make() -> Any:
            store = PostgresCallStore(dsn)
            stores.append(store)
            return store

    yield make
    for store in stores:
        await store.close()
