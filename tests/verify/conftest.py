"""Fixtures: real `tokenward serve` processes on loopback (one per configuration, shared by
the session), a user on the default one, a hand-moved clock, and Node's `jose`."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tokenward.verify import Verifier

from .support import FakeClock, Login, Servers, Tokenward

NODE_DIR = Path(__file__).parent / ".node"
JOSE_VERSION = "5"


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with ExitStack() as stack:
        yield Servers(tmp_path_factory.mktemp("servers"), stack)


@pytest.fixture(scope="session")
def tokenward(servers: Servers) -> Tokenward:
    """The default server: ES256, no audience."""
    return servers.get()


@pytest.fixture(scope="session")
def alice(tokenward: Tokenward) -> Login:
    """A user signed in once for the session; tests must not log her out."""
    return tokenward.login()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_verifier() -> Iterator[Callable[..., Verifier]]:
    """Verifier(...) whose HTTP client is closed after the test (no socket left open)."""
    made: list[Verifier] = []

    def make(*args: Any, **kwargs: Any) -> Verifier:
        made.append(Verifier(*args, **kwargs))
        return made[-1]

    yield make
    for verifier in made:
        verifier.close()


# -- Node's jose ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_jose() -> Path:
    """A directory with `jose` installed from the npm registry and verify.mjs beside it.

    node and npm are part of the test setup (`make node`, a step of `make test`): without them
    the interop tests fail, everywhere, never skip.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed for the interop tests: `make node` installs them")
    NODE_DIR.mkdir(exist_ok=True)
    manifest = NODE_DIR / "node_modules" / "jose" / "package.json"
    installed = json.loads(manifest.read_text())["version"] if manifest.exists() else ""
    if not installed.startswith(JOSE_VERSION + "."):
        (NODE_DIR / "package.json").write_text('{"private": true, "type": "module"}\n')
        installed_now = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--no-save", f"jose@{JOSE_VERSION}"],
            cwd=NODE_DIR,
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if installed_now.returncode != 0:
            pytest.fail(f"npm install jose@{JOSE_VERSION} failed:\n{installed_now.stderr}")
    shutil.copy(Path(__file__).parent / "jose_verify.mjs", NODE_DIR / "verify.mjs")
    return NODE_DIR
