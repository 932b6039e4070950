"""The one launcher of real `tokenward serve` processes (and the console script's path)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.logcheck import leaks

TOKENWARD = str(Path(sys.executable).parent / "tokenward")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    log: Path


@contextmanager
def server_process(
    data_dir: Path,
    port: int | None = None,
    *,
    args: Sequence[str] = (),
    hermetic: bool = False,
    cwd: Path | None = None,
    **env: str,
) -> Iterator[Server]:
    """Run the console script until the block ends (or the test kills it); hand out the
    process, its base URL and its log file. Stopped with SIGTERM at the end if still up.

    ``hermetic``: only the given TOKENWARD_* settings reach it, none of the test session's
    (the PostgreSQL run's database, for one); ``cwd``: where it runs (its ``.env`` folder).
    """
    port = port or free_port()
    log = data_dir.parent / f"serve-{port}.log"
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not (hermetic and name.startswith("TOKENWARD_"))
    }
    environment = {**inherited, "TOKENWARD_DATA_DIR": str(data_dir), **env}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [TOKENWARD, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=environment,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield Server(process, base, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise
    # What this real server wrote holds no secret or address either (as the suite's own lines:
    # support/logcheck.py); uvicorn's optional access line (--access-log) quotes raw paths,
    # which a fuzzer fills with anything, so it is left out.
    leaked = [
        f"{', '.join(found)} in: {line}"
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
        if "uvicorn.access" not in line and (found := leaks(line))
    ]
    assert not leaked, "the server logged what it must not:\n" + "\n".join(leaked[:10])


@contextmanager
def serving(
    data_dir: Path, port: int | None = None, *, args: Sequence[str] = (), **env: str
) -> Iterator[tuple[str, Path]]:
    """Run the console script until the block ends; yield its base URL and log file."""
    with server_process(data_dir, port, args=args, **env) as server:
        yield server.base, server.log
