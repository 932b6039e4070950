"""The base install is the resource-server library alone: no database, no web framework."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_verify_installs_and_imports_without_the_server(tmp_path: Path) -> None:
    """pip install tokenward (no extra): tokenward.verify and the admin client tokenward.admin
    work, SQLAlchemy is absent, and the console script says which extra to install."""
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    probe = (
        "import importlib.util, tokenward.verify as v, tokenward.admin as a; "
        "assert v.Verifier and a.AdminClient and a.AsyncAdminClient; "
        "missing = [m for m in ('sqlalchemy', 'fastapi', 'alembic', 'pwdlib') "
        "if importlib.util.find_spec(m) is not None]; "
        "print(missing)"
    )
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    script = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "tokenward"), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert script.returncode == 2
    assert 'pip install "tokenward[server]"' in script.stderr
    # The browser files, migrations and mail templates travel in the wheel (package data).
    shipped = subprocess.run(
        [
            str(python),
            "-c",
            "from importlib.resources import files; t = files('tokenward'); print(all("
            "(t / p).is_file() for p in ('static/tokenward.js', 'demo/index.html', "
            "'storage/migrations/versions/0001_initial_schema.py', "
            "'infra/mail_templates/reset_password.html')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shipped.stdout.strip() == "True", shipped.stderr
