"""A real PostgreSQL server for the tests, from the binaries in the pgserver wheel.

Started on loopback with its own data folder; no root needed, but when the tests run as root
the server runs as an unprivileged system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresCluster"]

_SYSTEM_USER = "pgserver"


def _binaries() -> Path:
    # Found, not imported: importing pgserver itself touches platform directories we don't use.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise RuntimeError("the PostgreSQL tests need the pgserver wheel: pip install pgserver")
    return Path(spec.origin).parent / "pginstall" / "bin"


POSTGRES_BIN_PATH = _binaries()


def _unprivileged_user() -> str:
    try:
        pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", _SYSTEM_USER], check=True)
    # Every folder above the binaries must be traversable by that user.
    for folder in POSTGRES_BIN_PATH.parents:
        folder.chmod(folder.stat().st_mode | 0o055)
    return _SYSTEM_USER


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One server (``initdb`` + ``pg_ctl``) that can be stopped and started again on its data."""

    def __init__(self, *, max_connections: int = 400, durable: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tokenward-pg-"))
        self.pgdata = self.root / "data"
        self.port = _free_port()
        self.max_connections = max_connections
        self.durable = durable
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = _unprivileged_user()
            entry = pwd.getpwnam(self._user)
            self.root.chmod(0o755)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        # Output to files, not pipes: pg_ctl's server keeps inherited pipes open forever.
        log = self.root / "commands.log"
        with log.open("ab") as output:
            result = subprocess.run(
                [str(POSTGRES_BIN_PATH / program), *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                user=self._user,
                cwd=self.root,
                timeout=120,
                check=False,
            )
        if check and result.returncode != 0:
            raise RuntimeError(f"{program} failed: {log.read_text()[-2000:]}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c port={self.port}",
            "-c unix_socket_directories=''",
            f"-c max_connections={self.max_connections}",
        ]
        if not self.durable:  # the suite's throwaway databases: no need to survive power loss
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.root / "server.log"),
            "-o", " ".join(options), "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop")

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout.strip()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.psql("select 1")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
