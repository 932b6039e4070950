"""The operator's console script, run as an operator runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from support.servers import TOKENWARD


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TOKENWARD, *args],
        env={**os.environ, "TOKENWARD_DATA_DIR": str(data_dir)},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def acli(
    data_dir: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI from an async test: in a thread, so the in-process app keeps serving."""
    return await asyncio.to_thread(cli, data_dir, *args, stdin=stdin)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout
