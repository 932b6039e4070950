"""`tokenward.verify` stands alone: no server module and no framework comes in with it."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

from tokenward.verify import Verifier

SERVER_SIDE = (
    "sqlalchemy",
    "alembic",
    "fastapi",
    "starlette",
    "flask",
    "pydantic",
    "uvicorn",
    "typer",
    "tokenward.app",
    "tokenward.core",
    "tokenward.infra",
    "tokenward.storage",
    "tokenward.web",
    "tokenward.cli",
)
"""Packages of the server or a framework: neither they nor any module under them may load."""


def server_side(loaded: set[str]) -> set[str]:
    """The loaded modules that are, or sit under, one of SERVER_SIDE."""
    return {m for m in loaded for name in SERVER_SIDE if m == name or m.startswith(name + ".")}


# The root error (tokenward.exceptions) imports nothing: the library's errors sit under it.
SHARED = {"tokenward.exceptions"}


def modules_after(code: str) -> set[str]:
    """The names in sys.modules after running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_importing_the_library_loads_nothing_of_the_server_or_a_framework() -> None:
    """After `import tokenward.verify` no server module, ORM or web framework is loaded."""
    loaded = modules_after("import tokenward.verify")
    assert not server_side(loaded)
    ours = {name for name in loaded if name.startswith("tokenward.")} - SHARED
    assert all(name.startswith("tokenward.verify") for name in ours), ours


def test_verifying_a_token_loads_nothing_more() -> None:
    """A full verify with a static key still pulls in no framework (no FastAPI signature)."""
    code = """
import time, jwt
from cryptography.hazmat.primitives.asymmetric import ec
from tokenward.verify import Verifier
key = ec.generate_private_key(ec.SECP256R1())
now = int(time.time())
claims = {"iss": "https://i", "sub": "u", "iat": now, "exp": now + 60, "jti": "j", "sid": "s"}
token = jwt.encode(claims, key, "ES256", headers={"typ": "at+jwt"})
assert Verifier("https://i", key=key.public_key()).verify(token).sub == "u"
"""
    loaded = modules_after(code)
    assert not server_side(loaded)


@pytest.mark.parametrize(
    ("glue", "framework"),
    [("fastapi", "fastapi"), ("flask", "flask"), ("starlette", None)],
)
def test_each_glue_module_brings_only_its_own_framework(glue: str, framework: str | None) -> None:
    """Importing one glue module loads its framework (the ASGI middleware needs none)."""
    loaded = modules_after(f"import tokenward.verify.{glue}")
    others = {"fastapi", "flask", "starlette"} - {
        framework,
        "starlette" if glue == "fastapi" else "",
    }
    for name in others:
        assert name not in loaded, name
    if framework is not None:
        assert framework in loaded
    assert "sqlalchemy" not in loaded


def test_the_class_keeps_an_ordinary_signature() -> None:
    """inspect.signature(Verifier) shows the constructor; only instances look like a dependency."""
    assert "issuer" in inspect.signature(Verifier).parameters
    verifier = Verifier("https://auth.example")
    assert list(inspect.signature(verifier).parameters) == ["connection", "credentials"]


def test_tokenward_testing_loads_nothing_of_the_server_or_a_framework() -> None:
    """Issuing and verifying through the fakes imports only tokenward.testing and .verify."""
    loaded = modules_after(
        "from tokenward.testing import TokenFactory\n"
        "tokens = TokenFactory()\n"
        "with tokens.verifier() as verifier:\n"
        "    assert verifier.verify(tokens.issue('u')).sub == 'u'"
    )
    assert not server_side(loaded)
    ours = {name for name in loaded if name.startswith("tokenward.")}
    allowed = SHARED | {"tokenward.testing"}
    assert all(n in allowed or n.startswith("tokenward.verify") for n in ours), ours
