"""Schemathesis against a real `tokenward serve`: every operation of the served OpenAPI document,
positive and negative data; no 5xx, and every answer (status, media type, body, headers) as the
document declares it. Bounded for CI: one run with a fixed seed, one with a random seed, and the
same for the admin API on a server of its own, called by a client holding every admin scope.
The 429 and 503 answers, which those servers never give (and the admin API's 401 and 403),
are checked in-process against the same declarations, and the declarations themselves are
pinned at the end.

The document is the contract: when schemathesis and the API disagree, the fix belongs in the
declarations (tokenward.web.openapi, tokenward.web.schemas), not here. The allowances below are
for rules JSON Schema cannot state; each says which.
"""

from __future__ import annotations

import base64
import os
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from asgi_lifespan import LifespanManager
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support import FAST_HASHER, LIFESPAN_TIMEOUT, PASSWORD, free_port, make_settings, serving

from tokenward.core import roles
from tokenward.core.scopes import AdminScope
from tokenward.infra.config import Settings
from tokenward.web import create_app

pytestmark = pytest.mark.sqlite_only  # a real server on its own SQLite file; no database here

SCHEMATHESIS = str(Path(sys.executable).parent / "st")
TOKENWARD = str(Path(sys.executable).parent / "tokenward")
FIXED_SEED = 20240917
MAX_EXAMPLES = 25
HASHING_MAX_EXAMPLES = 8  # each login costs an argon2 verification
PROBLEM = "application/problem+json"
RESPONSE_CHECKS = (
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
)

# What schemathesis takes for "rejected" (negative data) and "accepted" (positive data): its
# defaults plus 413. The body cap counts bytes and JSON Schema counts characters, so a
# schema-valid body of many multi-byte characters can still be too large.
REJECTED: list[Any] = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
ACCEPTED: list[Any] = ["2xx", "3xx", 401, 403, 404, 409, 413, 429, "5xx"]
# Operations whose schema-valid input may still be refused, for rules no schema states:
#   register: the email syntax (email-validator) and the password policy (422 invalid-email,
#     weak-password); password: the policy for the new password; login: NFKC can lengthen a
#     password past the 128-character cap (422 weak-password);
#   revocations: a well-formed cursor that names a time past the year 9999 (400);
#   the email flows: the email syntax and the password policy (422), and a mailed link's
#     token, which only the server can tell from a random string (400 link-invalid).
SEMANTIC_422 = "^/auth/(register|login|password|password/forgot|verify-email/request|email)$"
SEMANTIC_400 = "^/auth/(revocations|verify-email|email/confirm|email/cancel)$"
SEMANTIC_400_422 = "^/auth/password/reset$"  # the token (400) before the policy (422)
# The same, for one method of a path:
#   PATCH /auth/me: user_metadata's cap counts the bytes of the merged object, which depends on
#     what the user holds already (422 invalid-metadata);
#   GET /admin/users: a well-formed cursor this server did not hand out (400 invalid-cursor);
#   POST /admin/users: the email syntax and the password policy (422);
#   POST /auth/mfa/totp/confirm: a code that is not the new factor's current one, which only
#     the server's clock and the factor's secret can tell (422 invalid-mfa-code).
SEMANTIC_BY_METHOD: list[tuple[str, str, list[int]]] = [
    ("PATCH", "^/auth/me$", [422]),
    ("POST", "^/auth/mfa/totp/confirm$", [422]),
    ("GET", "^/admin/users$", [400]),
    ("POST", "^/admin/users$", [422]),
]
# DELETE /admin/users/{user_id}/sessions ends every session of the user: the collection stays,
# empty, and GET answers it 200. Schemathesis takes any DELETE with a path parameter for the
# removal of what is at that path (use_after_free); which DELETE empties a collection instead
# is no rule JSON Schema states.
SESSIONS_EMPTIED = (
    "[[operations]]\n"
    'include-name-regex = "^GET /admin/users/[^/]+/sessions$"\n'
    "checks.use_after_free.enabled = false\n"
)

READER, ENDER, COOKIE = "reader@example.com", "ender@example.com", "cookie@example.com"
EMAILER = "emailer@example.com"  # changes its address and deletes itself (wrong passwords)
# The admin API runs against a server of its own: its stateful phase finds every user through
# GET /admin/users, then disables, deletes and signs them out, which the accounts above must
# outlive. HELD is that server's user, signed in, so that its sessions are there to list.
HELD = "held@example.com"
ADMIN_PATHS = "^/admin/"

# Proof that each protected operation was really exercised, not only refused at the door.
EXERCISED: dict[tuple[str, str], set[int]] = {
    ("GET", "/auth/me"): {200},
    ("GET", "/auth/sessions"): {200},
    ("GET", "/auth/events"): {200},
    ("POST", "/auth/logout-others"): {204},
    ("POST", "/auth/logout-all"): {204},
    ("DELETE", "/auth/sessions/{session_id}"): {404},  # authenticated; not the caller's session
    ("POST", "/auth/password"): {422},  # authenticated; the new password broke the policy
    ("POST", "/auth/refresh"): {200},
    ("POST", "/auth/logout"): {204},
    ("POST", "/auth/introspect"): {200},
    ("POST", "/auth/revoke"): {200},
    ("GET", "/auth/revocations"): {200},
    ("PATCH", "/auth/me"): {200},
}
# The same for the admin API: its stateful phase acts on the users and roles it creates. A 404
# on one of these paths is an authenticated answer too (a wrong path is refused before).
EXERCISED_ADMIN: dict[tuple[str, str], set[int]] = {
    ("GET", "/admin/users"): {200},
    ("POST", "/admin/users"): {201, 409},
    ("GET", "/admin/users/{user_id}"): {200},
    ("DELETE", "/admin/users/{user_id}"): {204},
    ("POST", "/admin/users/{user_id}/disable"): {200},
    ("POST", "/admin/users/{user_id}/enable"): {204},
    ("PUT", "/admin/users/{user_id}/app_metadata"): {200},
    ("GET", "/admin/users/{user_id}/events"): {200},
    ("PUT", "/admin/users/{user_id}/roles/{role}"): {204},
    ("DELETE", "/admin/users/{user_id}/roles/{role}"): {204, 404},
    ("GET", "/admin/roles"): {200},
    ("PUT", "/admin/roles/{role}"): {200, 201},
    ("DELETE", "/admin/roles/{role}"): {204},
    ("GET", "/admin/users/{user_id}/sessions"): {200},
    ("DELETE", "/admin/users/{user_id}/sessions"): {200, 404},
    ("DELETE", "/admin/users/{user_id}/sessions/{session_id}"): {204, 404},
}
# The documented examples (ada@example.com) sign up, log in and use the password grant.
EXERCISED_BY_EXAMPLES: dict[tuple[str, str], set[int]] = {
    ("POST", "/auth/register"): {201, 409},  # 409 on a second run: valid, policy-proof, taken
    ("POST", "/auth/login"): {200},
    ("POST", "/auth/token"): {200},
}
ACCESS_LOG = re.compile(r'"(?P<method>[A-Z]+) (?P<path>[^ ?"]*)\S* HTTP/[\d.]+" (?P<status>\d{3})')


@dataclass
class Target:
    base: str
    log: Path
    workdir: Path
    client: tuple[str, str]
    """client_id and client_secret: the resource server's, or the admin client's."""

    @property
    def client_basic(self) -> str:
        """The client's ``Authorization: Basic`` value."""
        return _basic(*self.client)

    def login(self, email: str) -> httpx.Response:
        response = httpx.post(
            f"{self.base}/auth/login", json={"email": email, "password": PASSWORD}, timeout=60
        )
        assert response.status_code == 200, response.text
        return response


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def _register(base: str, email: str) -> None:
    body = {"email": email, "password": PASSWORD}
    response = httpx.post(f"{base}/auth/register", json=body, timeout=60)
    assert response.status_code == 201, response.text


def _create_client(data_dir: Path, name: str, *scopes: AdminScope) -> subprocess.Popen[str]:
    """``tokenward clients create NAME --scope ...`` against the server's data, started."""
    return subprocess.Popen(
        [TOKENWARD, "clients", "create", name, *(f"--scope={scope}" for scope in scopes)],
        env={**os.environ, "TOKENWARD_DATA_DIR": str(data_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _client_credentials(cli: subprocess.Popen[str]) -> tuple[str, str]:
    """client_id and client_secret from ``tokenward clients create``'s output."""
    output, errors = cli.communicate(timeout=120)
    assert cli.returncode == 0, errors
    fields = dict(line.split("=", 1) for line in output.split())
    return fields["client_id"], fields["client_secret"]


@contextmanager
def _server(workdir: Path, **env: str) -> Iterator[tuple[str, Path, Path]]:
    """`tokenward serve` with its access log, away from the developer's environment."""
    with pytest.MonkeyPatch.context() as patch:
        # conftest's per-test isolation, for a server that outlives one test.
        for name in list(os.environ):
            if name.startswith("TOKENWARD_"):
                patch.delenv(name)
        patch.chdir(workdir)  # no .env of the checkout
        data_dir = workdir / "data"
        with serving(data_dir, args=["--access-log"], **env) as (base, log):
            yield base, data_dir, log


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One server, rate limits off, for both seeded runs; its accounts and a client."""
    workdir = tmp_path_factory.mktemp("schemathesis")
    with _server(workdir, TOKENWARD_RATE_LIMITS="false") as (base, data_dir, log):
        cli = _create_client(data_dir, "schemathesis")  # its start-up overlaps the registrations
        for email in (READER, ENDER, COOKIE, EMAILER):
            _register(base, email)
        yield Target(base, log, workdir, _client_credentials(cli))


@pytest.fixture(scope="module")
def admin_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The admin API's server (see HELD), and a client holding every admin scope."""
    workdir = tmp_path_factory.mktemp("schemathesis-admin")
    with _server(workdir, TOKENWARD_RATE_LIMITS="false") as (base, data_dir, log):
        cli = _create_client(data_dir, "schemathesis-admin", *AdminScope)
        _register(base, HELD)
        admin = Target(base, log, workdir, _client_credentials(cli))
        admin.login(HELD)
        yield admin


def _toml_list(values: list[Any]) -> str:
    return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in values) + "]"


def _operations(path_regex: str, *lines: str, method: str | None = None) -> str:
    # One include: two (a method's and a path's) would select what matches either.
    selection = (
        f'include-name-regex = "^{method} {path_regex.lstrip("^")}"'
        if method
        else f'include-path-regex = "{path_regex}"'
    )
    return "\n".join(["[[operations]]", selection, *lines, ""])


def _config(*callers: str) -> str:
    """schemathesis.toml: the status allowances, and who calls which operations."""
    parts = [
        # Every check, in the file rather than as `--checks all`: a command-line choice of
        # checks would override an operation's own (SESSIONS_EMPTIED).
        "[checks]",
        "enabled = true",
        "[checks.negative_data_rejection]",
        f"expected-statuses = {_toml_list(REJECTED)}",
        "[checks.positive_data_acceptance]",
        f"expected-statuses = {_toml_list(ACCEPTED)}",
        "",
        _operations(
            SEMANTIC_422,
            "checks.positive_data_acceptance.expected-statuses = " + _toml_list([*ACCEPTED, 422]),
        ),
        _operations(
            SEMANTIC_400,
            "checks.positive_data_acceptance.expected-statuses = " + _toml_list([*ACCEPTED, 400]),
        ),
        _operations(
            SEMANTIC_400_422,
            "checks.positive_data_acceptance.expected-statuses = "
            + _toml_list([*ACCEPTED, 400, 422]),
        ),
        *(
            _operations(
                regex,
                "checks.positive_data_acceptance.expected-statuses = "
                + _toml_list([*ACCEPTED, *statuses]),
                method=method,
            )
            for method, regex, statuses in SEMANTIC_BY_METHOD
        ),
        _operations("^/auth/(token|login)$", f"generation.max-examples = {HASHING_MAX_EXAMPLES}"),
        *callers,
    ]
    return "\n".join(parts)


def _headers(identities: dict[str, dict[str, str]]) -> list[str]:
    """Config entries: the headers that authenticate each kind of caller."""
    entries = []
    for regex, values in identities.items():
        pairs = ", ".join(f'{name} = "{value}"' for name, value in values.items())
        entries.append(_operations(regex, f"headers = {{ {pairs} }}"))
    return entries


def _identities(target: Target) -> dict[str, dict[str, str]]:
    """Fresh sessions, one per kind of caller, so that no operation ends another's session.

    logout-all ends every session of its user, logout and a replayed refresh token end theirs:
    each gets a session nobody else uses, and the cookie user's sessions never meet the reader's
    (whose session ids GET /auth/sessions shows to the stateful phase).
    """
    reader = target.login(READER).json()["access_token"]
    ender = target.login(ENDER).json()["access_token"]
    refresh_cookie = target.login(COOKIE).cookies["tw_refresh"]
    logout_cookie = target.login(COOKIE).cookies["tw_refresh"]
    deleter = target.login(COOKIE).json()["access_token"]
    emailer = target.login(EMAILER).json()["access_token"]
    return {
        "^/auth/(me|sessions|events|logout-others|password)$": {
            "Authorization": f"Bearer {reader}"
        },
        "^/auth/logout-all$": {"Authorization": f"Bearer {ender}"},
        "^/auth/(email|account)$": {"Authorization": f"Bearer {emailer}"},
        "^/auth/sessions/": {"Authorization": f"Bearer {deleter}"},
        "^/auth/refresh$": {"Cookie": f"tw_refresh={refresh_cookie}"},
        "^/auth/logout$": {"Cookie": f"tw_refresh={logout_cookie}"},
        "^/auth/(introspect|revoke|revocations)$": {"Authorization": target.client_basic},
    }


def _tail(text: str, lines: int = 150) -> str:
    return "\n".join(line[:400] for line in text.splitlines()[-lines:])


def _schemathesis(base: str, workdir: Path, config: str, seed: int, *args: str) -> str:
    """Run ``st run`` to the end; its report goes to a file (it can be huge)."""
    config_file = workdir / f"schemathesis-{seed}.toml"
    config_file.write_text(config, encoding="utf-8")
    report = workdir / f"schemathesis-{seed}.txt"
    command = [
        SCHEMATHESIS,
        "--config-file",
        str(config_file),
        "--no-color",
        "run",
        f"{base}/openapi.json",
        "--mode",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(seed),
        "--no-shrink",
        "--generation-database",
        "none",
        # How fast hypothesis generates says nothing about the API; a busy runner is slow.
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "60",
        *args,
    ]
    with report.open("wb") as output:
        result = subprocess.run(
            command, stdout=output, stderr=subprocess.STDOUT, cwd=workdir, timeout=600
        )
    text = report.read_text(encoding="utf-8", errors="replace")
    assert result.returncode == 0, (
        f"schemathesis (seed {seed}) found problems; the end of its report {report}:\n"
        + _tail(text)
    )
    summary = re.search(r"(\d+) generated, (\d+) passed", text)
    assert summary, _tail(text)
    print(f"schemathesis seed {seed}: {summary.group(0)}")  # shown by pytest -s or -rP
    return text


def _templates(base: str) -> list[tuple[re.Pattern[str], str]]:
    """The served paths, each with a regex of the request paths it stands for."""
    paths = httpx.get(f"{base}/openapi.json", timeout=60).json()["paths"]
    return [
        (re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path))), path)
        for path in sorted(paths, key=lambda path: path.count("{"))  # a literal one first
    ]


def _answers(target: Target, start: int) -> Counter[tuple[str, str, int]]:
    """(method, path template, status) of every request in the server's access log."""
    text = target.log.read_bytes()[start:].decode("utf-8", "replace")
    templates = _templates(target.base)
    answers: Counter[tuple[str, str, int]] = Counter()
    for match in ACCESS_LOG.finditer(text):
        path = next((t for regex, t in templates if regex.fullmatch(match["path"])), match["path"])
        answers[match["method"], path, int(match["status"])] += 1
    return answers


def _fuzz(
    target: Target,
    seed: int,
    exercised: dict[tuple[str, str], set[int]],
    callers: list[str],
    *args: str,
) -> None:
    start = target.log.stat().st_size
    _schemathesis(target.base, target.workdir, _config(*callers), seed, *args)
    answers = _answers(target, start)
    assert not [answer for answer in answers if answer[2] >= 500], answers
    missing = {
        operation: statuses
        for operation, statuses in exercised.items()
        if not any(answers[(*operation, status)] for status in statuses)
    }
    assert not missing, f"never got past authentication or validation: {missing}\n{answers}"


def _users(
    target: Target, seed: int, exercised: dict[tuple[str, str], set[int]], *args: str
) -> None:
    """Every operation but the admin API's."""
    callers = _headers(_identities(target))
    _fuzz(target, seed, exercised, callers, f"--exclude-path-regex={ADMIN_PATHS}", *args)


def _admin(target: Target, seed: int, *args: str) -> None:
    """The admin API, as a client holding every admin scope. Set as the credentials of the
    document's HTTPBasic scheme (not a header, nor the generic ``auth.basic``, which requests
    sends on every request), so that the cases meant to go without them do."""
    client_id, secret = target.client
    basic = f'[auth.openapi.HTTPBasic]\nusername = "{client_id}"\npassword = "{secret}"\n'
    _fuzz(
        target,
        seed,
        EXERCISED_ADMIN,
        [SESSIONS_EMPTIED, basic],
        f"--include-path-regex={ADMIN_PATHS}",
        *args,
    )


def test_schemathesis_fixed_seed(target: Target) -> None:
    """Every phase: the documented examples, the boundary cases, fuzzing, stateful links."""
    _users(target, FIXED_SEED, {**EXERCISED, **EXERCISED_BY_EXAMPLES})


def test_schemathesis_random_seed(target: Target) -> None:
    """New data each run; the examples and boundary cases do not depend on the seed."""
    seed = random.randrange(1, 2**31)
    print(f"schemathesis random seed: {seed}")
    _users(target, seed, EXERCISED, "--phases", "fuzzing,stateful")


def test_schemathesis_admin_fixed_seed(admin_target: Target) -> None:
    _admin(admin_target, FIXED_SEED)


def test_schemathesis_admin_random_seed(admin_target: Target) -> None:
    seed = random.randrange(1, 2**31)
    print(f"schemathesis random seed: {seed}")
    _admin(admin_target, seed, "--phases", "fuzzing,stateful")


# -- 429 and 503, which the servers above never give ------------------------------------------


@asynccontextmanager
async def _in_process_app(
    tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(make_settings(tmp_path / "data", **overrides), hasher=FAST_HASHER)
    async with (
        LifespanManager(app, startup_timeout=LIFESPAN_TIMEOUT, shutdown_timeout=LIFESPAN_TIMEOUT),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client,
    ):
        yield app, client


@asynccontextmanager
async def _in_process(tmp_path: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with _in_process_app(tmp_path, **overrides) as (_, client):
        yield client


def _validate(document: dict[str, Any], response: httpx.Response, status: int) -> None:
    """schemathesis' verdict on one answer: status, media type, body and headers as declared."""
    assert response.status_code == status, response.text
    method, path = response.request.method, response.request.url.path
    operation = schemathesis.openapi.from_dict(document)[path][method]
    operation.Case().validate_response(response, checks=list(RESPONSE_CHECKS))


async def test_rate_limited_answers_are_as_documented(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    limits = {
        "rate_limit_register_ip": "1/hour",
        "rate_limit_login_ip": "2/hour",
        "rate_limit_login_failures_account_ip": "1/hour",
        "rate_limit_refresh_ip": "1/hour",
        "rate_limit_user_actions": "1/hour",
    }
    credentials = {"email": READER, "password": PASSWORD}
    async with _in_process(tmp_path, **limits) as http:
        assert (await http.post("/auth/register", json=credentials)).status_code == 201
        _validate(document, await http.post("/auth/register", json=credentials), 429)
        login = await http.post("/auth/login", json=credentials)
        assert login.status_code == 200
        wrong = {**credentials, "password": "not the password at all"}
        assert (await http.post("/auth/login", json=wrong)).status_code == 401
        _validate(document, await http.post("/auth/login", json=credentials), 429)
        grant = {"grant_type": "password", "username": READER, "password": PASSWORD}
        _validate(document, await http.post("/auth/token", data=grant), 429)
        cookie = {"Cookie": f"tw_refresh={login.cookies['tw_refresh']}"}
        assert (await http.post("/auth/refresh", headers=cookie)).status_code == 200
        _validate(document, await http.post("/auth/refresh", headers=cookie), 429)
        grant = {"grant_type": "refresh_token", "refresh_token": login.cookies["tw_refresh"]}
        _validate(document, await http.post("/auth/token", data=grant), 429)
        # The failed login used up the account's failures: password checks wait as well.
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        change = {"current_password": "a guess at the password", "new_password": PASSWORD * 2}
        _validate(document, await http.post("/auth/password", json=change, headers=bearer), 429)
        # The sign-in was the user's one action: ending sessions waits too.
        _validate(document, await http.post("/auth/logout-others", headers=bearer), 429)
        _validate(document, await http.post("/auth/logout-all", headers=bearer), 429)


async def test_unavailable_answers_are_as_documented(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    """Redis out of reach: the limiter fails closed, 503 problem+json with Retry-After."""
    credentials = {"email": READER, "password": PASSWORD}
    async with _in_process(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0") as http:
        _validate(document, await http.post("/auth/register", json=credentials), 503)
        _validate(document, await http.post("/auth/login", json=credentials), 503)
        grant = {"grant_type": "password", "username": READER, "password": PASSWORD}
        _validate(document, await http.post("/auth/token", data=grant), 503)
        cookie = {"Cookie": "tw_refresh=twr_anything"}
        _validate(document, await http.post("/auth/refresh", headers=cookie), 503)
        readiness = await http.get("/readyz")
        _validate(document, readiness, 503)
        assert readiness.json()["checks"]["redis"] == "unavailable"


async def test_admin_refusals_are_as_documented(tmp_path: Path, document: dict[str, Any]) -> None:
    """The admin API's 401, 403 and 429, which the fuzzed admin client (every scope, no rate
    limits) does not get. A malformed Basic header is 401 invalid-client like any other
    refusal (FastAPI's HTTPBasic used to answer it itself: invalid-token, a bare challenge)."""
    async with _in_process_app(tmp_path, rate_limit_admin_client="1/hour") as (app, http):
        refused = (
            "Basic !not-base64!",
            "Basic " + base64.b64encode(b"no colon").decode(),
            _basic("twc_nobody", "wrong"),
            "Bearer a.b.c",
            "",
        )
        for authorization in refused:
            headers = {"Authorization": authorization} if authorization else {}
            response = await http.get("/admin/users", headers=headers)
            _validate(document, response, 401)
            assert response.json()["type"] == "urn:tokenward:problem:invalid-client"
            assert response.headers["www-authenticate"] == 'Basic realm="tokenward"'
        resource_server, secret = await app.state.clients.create("resource-server")
        caller = {"Authorization": _basic(resource_server.id, secret)}
        response = await http.get("/admin/users", headers=caller)
        _validate(document, response, 403)
        assert response.json()["scope"] == AdminScope.USERS_READ
        _validate(document, await http.get("/admin/users", headers=caller), 429)


# -- the declarations themselves, in-process ------------------------------------------------


@pytest.fixture
def document(settings: Settings) -> dict[str, Any]:
    return create_app(settings).openapi()  # what /openapi.json serves; no lifespan needed


def _problem_statuses(operation: dict[str, Any]) -> set[int]:
    return {
        int(status)
        for status, response in operation["responses"].items()
        if PROBLEM in response.get("content", {})
    }


# Every operation that reaches the database can answer 503; every one that may carry a body,
# 408 and 413; every one with input, 422. The rest per operation.
# Every admin operation: wrong client credentials, a missing scope, the client's rate limit.
ADMIN = {401, 403, 429, 503}
PROBLEMS: dict[tuple[str, str], set[int]] = {
    ("post", "/auth/register"): {400, 408, 409, 413, 422, 429, 503},
    ("post", "/auth/login"): {400, 401, 403, 408, 413, 422, 429, 503},
    ("post", "/auth/refresh"): {401, 403, 408, 413, 422, 429, 503},
    ("post", "/auth/logout"): {403, 408, 413, 422, 503},
    ("get", "/auth/me"): {401, 503},
    ("post", "/auth/token"): {400, 408, 413, 422, 429, 503},
    ("get", "/auth/sessions"): {401, 503},
    ("delete", "/auth/sessions/{session_id}"): {401, 404, 408, 413, 422, 429, 503},
    ("post", "/auth/logout-all"): {401, 408, 413, 422, 429, 503},
    ("post", "/auth/logout-others"): {401, 408, 413, 422, 429, 503},
    ("post", "/auth/password"): {400, 401, 408, 413, 422, 429, 503},
    ("get", "/auth/events"): {401, 422, 503},
    ("post", "/auth/introspect"): {400, 408, 413, 422, 503},
    ("post", "/auth/revoke"): {400, 408, 413, 422, 503},
    ("get", "/auth/revocations"): {422, 503},
    ("post", "/auth/verify-email/request"): {400, 408, 413, 422, 429, 503},
    ("post", "/auth/verify-email"): {400, 408, 413, 422, 503},
    ("post", "/auth/password/forgot"): {400, 408, 413, 422, 429, 503},
    ("post", "/auth/password/reset"): {400, 408, 413, 422, 503},
    ("post", "/auth/email"): {400, 401, 408, 413, 422, 429, 503},
    ("delete", "/auth/email"): {401, 408, 413, 422, 429, 503},
    ("post", "/auth/email/confirm"): {400, 408, 409, 413, 422, 503},
    ("post", "/auth/email/cancel"): {400, 408, 413, 422, 503},
    ("delete", "/auth/account"): {400, 401, 408, 413, 422, 429, 503},
    ("patch", "/auth/me"): {400, 401, 408, 413, 422, 429, 503},
    # The second factor (docs/mfa.md): 401 also for a step-up (RFC 9470) or an mfa_token.
    ("post", "/auth/mfa/totp/enroll"): {400, 401, 408, 409, 413, 422, 503},
    ("post", "/auth/mfa/totp/confirm"): {400, 401, 403, 404, 408, 413, 422, 503},
    ("get", "/auth/mfa/factors"): {401, 503},
    ("delete", "/auth/mfa/factors/{factor_id}"): {401, 404, 408, 413, 422, 503},
    ("post", "/auth/mfa/recovery-codes/regenerate"): {401, 404, 408, 413, 422, 503},
    ("post", "/auth/mfa/verify"): {400, 401, 403, 408, 413, 422, 429, 503},
    ("post", "/auth/reauthenticate"): {400, 401, 408, 413, 422, 429, 503},
    # The admin API: 404 for what names a user, a role or a session; the rest as above.
    ("get", "/admin/users"): {*ADMIN, 400, 422},
    ("post", "/admin/users"): {*ADMIN, 400, 404, 408, 409, 413, 422},
    ("get", "/admin/users/{user_id}"): {*ADMIN, 404, 422},
    ("delete", "/admin/users/{user_id}"): {*ADMIN, 404, 408, 413, 422},
    ("post", "/admin/users/{user_id}/disable"): {*ADMIN, 404, 408, 413, 422},
    ("post", "/admin/users/{user_id}/enable"): {*ADMIN, 404, 408, 413, 422},
    ("put", "/admin/users/{user_id}/app_metadata"): {*ADMIN, 400, 404, 408, 413, 422},
    ("get", "/admin/users/{user_id}/events"): {*ADMIN, 404, 422},
    ("put", "/admin/users/{user_id}/roles/{role}"): {*ADMIN, 404, 408, 413, 422},
    ("delete", "/admin/users/{user_id}/roles/{role}"): {*ADMIN, 404, 408, 413, 422},
    ("get", "/admin/roles"): ADMIN,
    ("put", "/admin/roles/{role}"): {*ADMIN, 400, 408, 413, 422},
    ("delete", "/admin/roles/{role}"): {*ADMIN, 404, 408, 413, 422},
    ("get", "/admin/users/{user_id}/sessions"): {*ADMIN, 404, 422},
    ("delete", "/admin/users/{user_id}/sessions"): {*ADMIN, 404, 408, 413, 422},
    ("delete", "/admin/users/{user_id}/sessions/{session_id}"): {*ADMIN, 404, 408, 413, 422},
    ("delete", "/admin/users/{user_id}/factors"): {*ADMIN, 404, 408, 413, 422},
}


@pytest.mark.parametrize(("method", "path"), list(PROBLEMS))
def test_openapi_declares_the_error_answers(
    document: dict[str, Any], method: str, path: str
) -> None:
    operation = document["paths"][path][method]
    assert _problem_statuses(operation) == PROBLEMS[method, path]
    for status, response in operation["responses"].items():
        content = response.get("content", {})
        if PROBLEM in content:
            schema = content[PROBLEM]["schema"]
            assert {"$ref": "#/components/schemas/Problem"} in schema["allOf"]
            assert schema["allOf"][-1]["properties"]["status"] == {"const": int(status)}
        if status in {"429", "503"}:
            assert response["headers"]["Retry-After"]["required"] is True
    # FastAPI's default 422 (application/json, HTTPValidationError) is not what is answered.
    assert "application/json" not in operation["responses"].get("422", {}).get("content", {})


def test_openapi_problem_schema(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    problem = schemas["Problem"]
    assert set(problem["required"]) == {"type", "title", "status"}
    assert problem["additionalProperties"] is True  # RFC 9457 extension members
    assert "HTTPValidationError" not in schemas
    # The OAuth endpoints keep RFC 6749's error shape.
    for path, method, status in (
        ("/auth/token", "post", "400"),
        ("/auth/introspect", "post", "401"),
        ("/auth/revoke", "post", "401"),
        ("/auth/revocations", "get", "401"),
        ("/auth/revocations", "get", "400"),
    ):
        content = document["paths"][path][method]["responses"][status]["content"]
        schema = content["application/json"]["schema"]
        if path == "/auth/token":
            # A user with a second factor: invalid_grant, with the pending sign-in.
            assert schema["anyOf"] == [
                {"$ref": "#/components/schemas/OAuthError"},
                {"$ref": "#/components/schemas/MfaRequiredError"},
            ]
        else:
            assert schema == {"$ref": "#/components/schemas/OAuthError"}


def test_every_operation_has_its_pinned_error_answers(document: dict[str, Any]) -> None:
    """A new operation cannot ship without a line in PROBLEMS (and so without its declared
    errors checked)."""
    served = {(method, path) for path, item in document["paths"].items() for method in item}
    documents_only = {("get", "/healthz"), ("get", "/.well-known/jwks.json")}
    documents_only |= {("get", "/.well-known/oauth-authorization-server"), ("get", "/readyz")}
    assert served - documents_only == set(PROBLEMS)


def test_openapi_admin_operations(document: dict[str, Any]) -> None:
    """Client credentials on every admin operation, under the scheme name the fuzzer's auth
    names; their 401 is invalid-client with its Basic challenge, their 403 insufficient-scope."""
    scheme = document["components"]["securitySchemes"]["HTTPBasic"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "basic")
    admin = [
        operation
        for path, item in document["paths"].items()
        if path.startswith("/admin/")
        for operation in item.values()
    ]
    assert len(admin) == 17
    for operation in admin:
        assert operation["security"] == [{"HTTPBasic": []}]
        refused = operation["responses"]["401"]
        challenge = refused["headers"]["WWW-Authenticate"]
        assert challenge["required"] is True
        assert challenge["schema"]["pattern"] == "^Basic "
        types = refused["content"][PROBLEM]["schema"]["allOf"][-1]["properties"]["type"]
        assert types == {"enum": ["urn:tokenward:problem:invalid-client"]}
        forbidden = operation["responses"]["403"]["content"][PROBLEM]["schema"]
        types = forbidden["allOf"][-1]["properties"]["type"]
        assert types == {"enum": ["urn:tokenward:problem:insufficient-scope"]}


def test_openapi_states_the_role_syntax(document: dict[str, Any]) -> None:
    """Role names and permissions carry core.roles' own syntax (a schema-valid name is one the
    server takes: the fuzzer's positive data needs no allowance for 422 invalid-role)."""
    name = "^" + roles._ROLE_NAME.pattern + "$"
    permission = "^" + roles._PERMISSION.pattern + "$"
    for path, method in (
        ("/admin/roles/{role}", "put"),
        ("/admin/roles/{role}", "delete"),
        ("/admin/users/{user_id}/roles/{role}", "put"),
        ("/admin/users/{user_id}/roles/{role}", "delete"),
    ):
        parameters = document["paths"][path][method]["parameters"]
        (role,) = [p for p in parameters if p["name"] == "role"]
        assert role["schema"]["pattern"] == name, (method, path)
    schemas = document["components"]["schemas"]
    assert schemas["NewUser"]["properties"]["roles"]["items"]["pattern"] == name
    assert schemas["RoleIn"]["properties"]["permissions"]["items"]["pattern"] == permission
