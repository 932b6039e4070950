"""The layers of src/tokenward import downward only, and only storage talks SQL.

core (pure rules) <- infra (settings, limits, secrets) <- storage (the port's adapters)
<- app (use cases) <- web, cli. verify (the resource-server library) imports nothing of the
server and sits below them all: the token rules and the one clock type are its. Read from the
source with ast: no module is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tokenward

PACKAGE = Path(tokenward.__file__).parent
LAYERS = ("core", "infra", "storage", "app", "web")
# What each layer may import of tokenward besides itself (exceptions is the root error).
ALLOWED = {
    "core": {"exceptions", "verify"},
    "infra": {"exceptions", "core"},
    "storage": {"exceptions", "core", "infra"},
    "app": {"exceptions", "core", "infra", "storage", "verify"},
    "web": {"exceptions", "core", "infra", "storage", "app", "verify"},
    "verify": {"exceptions"},
    "admin": {"exceptions"},
}
SQL_DRIVERS = ("sqlalchemy", "sqlite3", "asyncpg", "aiosqlite", "alembic")
WEB_FRAMEWORKS = ("fastapi", "starlette", "uvicorn")


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _layer_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "tokenward" and len(parts) > 1 else None


@pytest.mark.sqlite_only
@pytest.mark.parametrize("layer", [*LAYERS, "verify", "admin"])
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    wrong = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in _modules(layer)
        for name in _imports(path)
        if (target := _layer_of(name)) is not None
        and target != layer
        and target not in ALLOWED[layer]
    }
    assert not wrong, sorted(wrong)


@pytest.mark.sqlite_only
def test_only_storage_talks_sql() -> None:
    """The use cases speak to storage through its port (storage.port), in core values."""
    above = [
        path
        for layer in ("core", "infra", "app", "web", "verify", "admin")
        for path in _modules(layer)
    ]
    talking = {
        str(path.relative_to(PACKAGE))
        for path in [*above, PACKAGE / "cli.py", PACKAGE / "testing.py"]
        if any(name.split(".")[0] in SQL_DRIVERS for name in _imports(path))
    }
    assert talking == set()


@pytest.mark.sqlite_only
def test_the_core_has_no_io_framework_or_settings() -> None:
    forbidden = (*SQL_DRIVERS, *WEB_FRAMEWORKS, "httpx", "redis", "limits", "pydantic_settings")
    wrong = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in _modules("core")
        for name in _imports(path)
        if name.split(".")[0] in forbidden
    }
    assert not wrong, sorted(wrong)
