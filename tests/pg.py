"""A real, throwaway PostgreSQL for the tests, started from the installed binaries.

The cluster lives under a temporary folder, listens on a free loopback port (and a socket in
that folder), runs without fsync (the tests never survive a power cut) and is stopped when
the session ends. Each test gets its own database, copied from a template migrated once.

Without PostgreSQL's binaries the tests that need it are skipped, saying why; with CI=true
they fail instead, so CI can never pass by skipping them. PostgreSQL refuses to run as root:
as root the cluster runs as the `postgres` user that Debian's package creates.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import asyncpg
import pytest

from bot.ledger.pg_migrations import migrate_postgres

TEMPLATE: Final = "ledger_template"
_SUPERUSER: Final = "postgres"


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    # Debian keeps the server binaries out of PATH.
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(versions[0]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unavailable(reason: str) -> None:
    """Skip, or in CI fail: CI must run every PostgreSQL test."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


@dataclass
class PgCluster:
    """A running cluster: URLs for fresh databases."""

    host: str
    port: int
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@{self.host}:{self.port}/{database}"

    async def fresh_database(self, *, migrated: bool = True) -> str:
        """A new, empty database (migrated unless told otherwise); its URL."""
        name = f"test_{os.getpid()}_{next(self._numbers)}"
        template = TEMPLATE if migrated else "template0"
        connection = await asyncpg.connect(self.url())
        try:
            await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE {template}')
        finally:
            await connection.close()
        return self.url(name)

    async def prepare_template(self) -> None:
        connection = await asyncpg.connect(self.url())
        try:
            await connection.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await connection.close()
        template = await asyncpg.connect(self.url(TEMPLATE))
        try:
            await migrate_postgres(template)  # type: ignore[arg-type]
        finally:
            await template.close()


def _as_owner(command: Sequence[str]) -> list[str]:
    if os.geteuid() != 0:
        return list(command)
    return ["runuser", "-u", _SUPERUSER, "--", *command]


def start_cluster(folder: Path) -> tuple[PgCluster, Path, Path]:
    """initdb and start a cluster under `folder`; the cluster, its data folder and bindir."""
    bindir = _bindir()
    if bindir is None:
        unavailable("initdb/pg_ctl not found (install Debian's `postgresql` package)")
        raise AssertionError("unreachable")
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            unavailable("running as root and `runuser` is missing")
        try:
            shutil.chown(folder, user=_SUPERUSER)
        except (LookupError, PermissionError) as error:
            unavailable(f"running as root and no `{_SUPERUSER}` user to run the server: {error}")
    data = folder / "data"
    subprocess.run(  # noqa: S603
        _as_owner([str(bindir / "initdb"), "-D", str(data), "-U", _SUPERUSER, "-A", "trust"]),
        check=True,
        capture_output=True,
    )
    port = _free_port()
    options = (
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    subprocess.run(  # noqa: S603
        _as_owner(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(folder / "server.log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    return PgCluster("127.0.0.1", port), data, bindir


def stop_cluster(data: Path, bindir: Path) -> None:
    subprocess.run(  # noqa: S603
        _as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
        check=False,
        capture_output=True,
    )


def cluster_folder() -> Path:
    # Not under pytest's tmp_path: that is root's, and the server may run as `postgres`.
    return Path(tempfile.mkdtemp(prefix="imagine-pg-"))
