"""The README's walk-through works exactly as printed, against a real server."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from support import serving

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(
        r"<!-- walkthrough:start -->\n```sh\n(.*?)```\n<!-- walkthrough:end -->", text, re.S
    )
    assert block, "README lost its walk-through markers"
    return block[1]


def test_readme_walkthrough(tmp_path: Path) -> None:
    script = walkthrough()
    assert "BASE=http://127.0.0.1:8000" in script
    with serving(tmp_path / "data") as (base, _):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script.replace("http://127.0.0.1:8000", base)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    registered, me, refreshed, logout = result.stdout.strip().splitlines()
    assert '"email":"ada@example.com"' in registered
    assert '"email":"ada@example.com"' in me
    assert '"access_token"' in refreshed
    assert logout == "204"
