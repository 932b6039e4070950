"""The docs stay true to the code: settings exist, commands exist, the sample env file loads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tokenward.exceptions import ConfigError
from tokenward.infra.config import ENV_PREFIX, Settings, load_settings

pytestmark = pytest.mark.sqlite_only  # no database at all

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_GUIDE = ROOT / "docs" / "deploy.md"
SAMPLES = ROOT / "docs" / "deploy"
ENV_EXAMPLE = SAMPLES / "tokenward.env.example"
CONSOLE_SCRIPT = str(Path(sys.executable).parent / "tokenward")

SETTINGS = frozenset(ENV_PREFIX + name.upper() for name in Settings.model_fields)
ENV_NAME = re.compile(r"TOKENWARD_[A-Z0-9_]+")
# Names that docs use for something other than a tokenward setting, per file.
NOT_SETTINGS = {
    # The resource server's own variables in an example of the verifier library.
}

# `tokenward` then its command words (lower case, up to the first option or argument).
COMMAND = re.compile(r"(?<![\w.-])tokenward((?:\s+[a-z][a-z-]*(?![\w@.:/\[-]))+)")


def _documents() -> list[Path]:
    docs = sorted((ROOT / "docs").glob("*.md"))
    samples = sorted(path for path in SAMPLES.iterdir() if path.is_file())
    return [ROOT / "README.md", *docs, *samples]


def _markdown_code(text: str) -> list[str]:
    """Fenced blocks line by line, then inline code spans (which may wrap)."""
    pieces: list[str] = []
    fences = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
    for block in fences.findall(text):
        pieces.extend(block.splitlines())
    pieces.extend(re.findall(r"`([^`]+)`", fences.sub("", text)))
    return pieces


def _command_paths() -> list[str]:
    pieces = _markdown_code(DEPLOY_GUIDE.read_text(encoding="utf-8"))
    for line in (SAMPLES / "tokenward.service").read_text(encoding="utf-8").splitlines():
        if line.startswith("Exec"):  # ExecStart=, ExecStartPre=, ...
            pieces.append(line.partition("=")[2])
    for line in (SAMPLES / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("CMD ["):
            pieces.append(" ".join(json.loads(line.removeprefix("CMD "))))
    paths = {" ".join(match.split()) for piece in pieces for match in COMMAND.findall(piece)}
    return sorted(paths)


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        values[name] = value
    return values


@pytest.mark.parametrize("document", _documents(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_env_name_in_the_docs_is_a_setting(document: Path) -> None:
    """A TOKENWARD_* name in the README, docs/*.md or the deploy samples is a real setting."""
    where = str(document.relative_to(ROOT))
    named = set(ENV_NAME.findall(document.read_text(encoding="utf-8")))
    unknown = named - SETTINGS - NOT_SETTINGS.get(where, set())
    assert not unknown, f"{where} names variables that are not settings: {sorted(unknown)}"


def test_the_deploy_guide_shows_the_commands_it_relies_on() -> None:
    """The command scan finds the guide's core commands (so the next test is not vacuous)."""
    assert {"serve", "db upgrade", "db check", "db prune", "keys rotate"} <= set(_command_paths())


@pytest.mark.parametrize("command", _command_paths())
def test_every_command_in_the_deploy_guide_exists(command: str) -> None:
    """`tokenward <command> --help` succeeds for each command the guide and samples show."""
    result = subprocess.run(
        [CONSOLE_SCRIPT, *command.split(), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"tokenward {command}: {result.stdout}{result.stderr}"


def test_the_env_example_loads_once_its_secret_is_filled_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every line of tokenward.env.example is a valid setting, read as production settings;
    copied unchanged it refuses to start rather than run on a published secret."""
    values = _env_example()
    assert values["TOKENWARD_SECRET_KEY"] == ""
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="TOKENWARD_SECRET_KEY"):
        load_settings()
    values["TOKENWARD_SECRET_KEY"] = "x" * 64
    for name, value in values.items():
        assert name in SETTINGS, name
        # docker --env-file keeps quotes as part of the value; systemd strips them.
        assert not value.startswith(("'", '"')), f"{name}: no quotes in an env file"
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.production
    assert settings.sqlalchemy_url.startswith("postgresql+asyncpg://")
    assert settings.redis_url is not None
    assert settings.secret_key is not None
    assert settings.issuer.startswith("https://")
    assert settings.trusted_proxies


# Promises of work to come: once the work is done, the sentence is out of date.
PROMISES = re.compile(
    r"\b(?:a|the|some)\s+(?:later|future|next)\s+(?:issue|release|version)\b", re.I
)
LINK = re.compile(r"\]\(((?!https?:|mailto:)[^)#\s]+\.md)(?:#([^)\s]+))?\)")


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.M)
    return {
        re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-") for heading in headings
    }


@pytest.mark.parametrize("document", _documents(), ids=lambda path: str(path.relative_to(ROOT)))
def test_the_docs_speak_of_the_project_as_it_is(document: Path) -> None:
    """Issue 13: no "a later issue" for what exists (the README said so of the revocation
    feed); links to other documents, and their #anchors, lead somewhere."""
    text = document.read_text(encoding="utf-8")
    where = str(document.relative_to(ROOT))
    assert not PROMISES.findall(text), f"{where} promises work to come: {PROMISES.findall(text)}"
    for target, anchor in LINK.findall(text):
        linked = (document.parent / target).resolve()
        assert linked.is_file(), f"{where} links to a missing {target}"
        if anchor:
            assert anchor in _anchors(linked.read_text(encoding="utf-8")), (
                f"{where}: {target}#{anchor}"
            )
