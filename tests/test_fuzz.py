"""Hostile-input fuzzing: token parsers, verifiers, the HTTP endpoints and the JWKS client.

Each subject gets arbitrary text and bytes, plus near-misses mutated from valid values (see
support.fuzz). The properties: only the documented exception comes out (TokenError on the
server, the VerificationError family in tokenward.verify), a mutated token never succeeds, an
HTTP answer is never a 5xx and has the documented error shape, and no answer echoes the
password that was sent. Bounded for CI; FUZZ_SCALE=10 runs ten times as many examples.
The regression tests at the end pin the bugs this file found (now fixed).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.requests import cookie_parser
from support import PASSWORD
from support.fuzz import (
    B64URL,
    PRINTABLE_LATIN1,
    AppHarness,
    b64url,
    dumps,
    hostile_text,
    json_object_text,
    json_values,
    latin1_bytes,
    mutated,
    rarely,
    reference_verdict,
    same_json,
    text_bytes,
)

from tokenward.core.keys import Keyring, SigningKey, generate_private_pem, hs256_key, load_key
from tokenward.core.refresh import RefreshTokenCodec
from tokenward.core.tokens import LEEWAY_SECONDS, AccessTokenCodec
from tokenward.exceptions import TokenError
from tokenward.infra.config import SigningAlg
from tokenward.verify import (
    Claims,
    VerificationError,
    Verifier,
    VerifyKey,
    parse_compact,
    verify_compact,
    verify_parsed,
)
from tokenward.verify import load_key as load_verify_key

pytestmark = pytest.mark.sqlite_only

SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))


def fuzz(examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


ISSUER = "https://auth.example"
AUDIENCE = "https://api.example"
NOW = 1_800_000_000
PROBLEM_JSON = "application/problem+json"
ALGS: tuple[SigningAlg, ...] = ("ES256", "EdDSA", "RS256", "HS256")

# -- access tokens: one keyring, codec and verifier per algorithm ------------------------------


class FixedClock:
    def time(self) -> float:
        return NOW

    def monotonic(self) -> float:
        return 1000.0


@dataclass
class Subject:
    """Everything that verifies tokens of one signing key, and valid tokens of it."""

    alg: str
    key: SigningKey
    codec: AccessTokenCodec
    codec_aud: AccessTokenCodec
    verify_key: VerifyKey
    verifier: Verifier
    verifier_aud: Verifier
    tokens: list[str] = field(default_factory=list)

    def sign(self, header: bytes, payload: bytes) -> str:
        signing_input = f"{b64url(header)}.{b64url(payload)}"
        algorithm = jwt.algorithms.get_default_algorithms()[self.alg]
        signature = algorithm.sign(signing_input.encode("ascii"), self.key.private_key)
        return f"{signing_input}.{b64url(signature)}"


@cache
def subject(alg: SigningAlg) -> Subject:
    if alg == "HS256":
        key = hs256_key(b"fuzz tests: an HS256 secret of 32+ bytes")
        public: Any = key.verify_key
    else:
        dawn = datetime(2000, 1, 1, tzinfo=UTC)
        key = load_key(alg, generate_private_pem(alg), activates_at=dawn)
        public = key.verify_key
    keyring = Keyring([key], alg=key.alg, token_lifetime=timedelta(minutes=15))
    ttl = timedelta(minutes=15)
    options: dict[str, Any] = {"key": public, "algorithm": alg, "kid": key.kid}
    made = Subject(
        alg=alg,
        key=key,
        codec=AccessTokenCodec(keyring, issuer=ISSUER, audience=None, ttl=ttl),
        codec_aud=AccessTokenCodec(keyring, issuer=ISSUER, audience=AUDIENCE, ttl=ttl),
        verify_key=load_verify_key(public, algorithm=alg, kid=key.kid),
        verifier=Verifier(ISSUER, clock=FixedClock(), **options),
        verifier_aud=Verifier(ISSUER, AUDIENCE, clock=FixedClock(), **options),
    )
    made.tokens = [
        made.codec.issue(user_id=f"user-{n}", session_id=f"session-{n}", now=NOW - n)
        for n in range(3)
    ]
    return made


Outcome = tuple[str, Any]


def outcome(call: Callable[[], Claims], expected: type[Exception]) -> Outcome:
    """("accepted", raw claims) or ("refused", reason); any other exception propagates."""
    try:
        claims = call()
    except expected as exc:
        return "refused", getattr(exc, "reason", None)
    assert isinstance(claims, Claims)
    return "accepted", dict(claims.raw)


def every_verdict(target: Subject, token: str) -> dict[str, Outcome]:
    """The token through every server and library entry point, for audience None and set."""

    def parsed_then_verified() -> Claims:
        parsed = parse_compact(token)
        if parsed.kid != target.key.kid:
            raise VerificationError("unknown_kid")
        return verify_parsed(parsed, target.verify_key, issuer=ISSUER, audience=None, now=NOW)

    def compact(audience: str | None) -> Callable[[], Claims]:
        keys = {target.key.kid: target.verify_key}
        return lambda: verify_compact(token, keys, issuer=ISSUER, audience=audience, now=NOW)

    return {
        "codec": outcome(lambda: target.codec.verify(token, now=NOW), TokenError),
        "codec, audience": outcome(lambda: target.codec_aud.verify(token, now=NOW), TokenError),
        "parse_compact + verify_parsed": outcome(parsed_then_verified, VerificationError),
        "verify_compact": outcome(compact(None), VerificationError),
        "verify_compact, audience": outcome(compact(AUDIENCE), VerificationError),
        "Verifier": outcome(lambda: target.verifier.verify(token), VerificationError),
        "Verifier, audience": outcome(lambda: target.verifier_aud.verify(token), VerificationError),
    }


def audience_of(name: str) -> str | None:
    return AUDIENCE if name.endswith("audience") else None


@fuzz(300)
@given(hostile_text())
def test_access_tokens_refuse_any_text(text: str) -> None:
    """Arbitrary text and bytes: TokenError from the server, VerificationError from the
    library, at every entry point; never another exception, never a success."""
    verdicts = every_verdict(subject("ES256"), text)
    assert all(verdict == "refused" for verdict, _ in verdicts.values()), verdicts
    event(f"reason: {verdicts['verify_compact'][1]}")


@fuzz(400)
@given(st.sampled_from(ALGS), st.data())
def test_mutated_access_tokens_are_refused(alg: SigningAlg, data: st.DataObject) -> None:
    """A valid token of each algorithm, mutated: refused everywhere unless the mutations
    happened to give back one of the valid tokens, character for character."""
    target = subject(alg)
    original = data.draw(st.sampled_from(target.tokens), label="original")
    token = data.draw(mutated(original, target.tokens), label="mutated")
    event(f"alg: {alg}")
    verdicts = every_verdict(target, token)
    if token in target.tokens:  # e.g. both segments and the signature pasted from a donor
        event("mutations gave a valid token back")
        for name, (verdict, _) in verdicts.items():  # it has no aud: refused where one is due
            assert verdict == ("refused" if audience_of(name) else "accepted"), verdicts
        return
    assert all(verdict == "refused" for verdict, _ in verdicts.values()), verdicts
    event(f"reason: {verdicts['verify_compact'][1]}")


# Values a claim or header member is swapped for: odd types, and the near-misses around the
# rules (time edges, issuer and audience look-alikes, alg and typ spellings).
_TIME_EDGES = [NOW + d for d in (0, 1, -1, 30, 31, -30, -31, 900, -900)]
CLAIM_VALUES = st.one_of(
    json_values,
    st.sampled_from(
        [
            *_TIME_EDGES,
            float(NOW),
            NOW + 0.5,
            str(NOW),
            True,
            False,
            2**63,
            10**30,
            ISSUER,
            ISSUER + "/",
            ISSUER.upper(),
            AUDIENCE,
            [AUDIENCE],
            [AUDIENCE, "other"],
            [AUDIENCE, 1],
            ["other"],
            "read write",
            ["admin"],
            [1],
            "",
            " ",
            "\x00",
        ]
    ),
)
CLAIM_NAMES = st.one_of(
    st.sampled_from(
        ["aud", "nbf", "scope", "roles", "iss", "sub", "iat", "exp", "jti", "sid", "cnf", "act"]
    ),
    st.text(max_size=6),
)
HEADER_VALUES = st.one_of(
    json_values,
    st.sampled_from(
        [
            "none",
            "None",
            "HS256",
            "ES256",
            "es256",
            "ES256 ",
            "EdDSA",
            "RS256",
            "PS256",
            "ES384",
            "JWT",
            "AT+JWT",
            "application/AT+JWT",
            "application/at+jwt",
            "at+jwt\x00",
            "at+jwt ",
            "",
            False,
            True,
            0,
        ]
    ),
)
HEADER_NAMES = st.one_of(
    st.sampled_from(
        ["jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit", "b64", "JKU", "cty", "zip", "kid"]
    ),
    st.text(max_size=6),
)


@st.composite
def odd_signed_token(draw: st.DrawFn) -> tuple[Subject, bytes, bytes, str]:
    """Header and payload bytes near a valid token's (odd JSON included), correctly signed."""
    target = subject(draw(st.sampled_from(ALGS)))
    header = {"alg": target.alg, "typ": "at+jwt", "kid": target.key.kid}
    if rarely(draw, 8):
        header["kid"] = draw(st.sampled_from([target.key.kid + " ", target.key.kid.upper(), ""]))
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "iat": draw(st.sampled_from(_TIME_EDGES)),
        "exp": draw(st.sampled_from(_TIME_EDGES)),
        "jti": "jti-1",
        "sid": "session-1",
    }
    for name in ("aud", "nbf", "scope", "roles"):
        if rarely(draw, 5):
            claims[name] = draw(CLAIM_VALUES)
    # Damage one of them, both or neither (then only the time edges and the optional
    # claims decide): near-misses that get past the header reach the claim rules.
    damaged = draw(st.sampled_from(["payload", "header", "neither", "both"]))
    event(f"damaged: {damaged}")
    header_raw = text_bytes(
        draw(
            json_object_text(
                header,
                odd_values=HEADER_VALUES,
                extra_names=HEADER_NAMES,
                intact=damaged in {"payload", "neither"},
            )
        )
    )
    payload_raw = text_bytes(
        draw(
            json_object_text(
                claims,
                odd_values=CLAIM_VALUES,
                extra_names=CLAIM_NAMES,
                intact=damaged in {"header", "neither"},
            )
        )
    )
    if rarely(draw, 16):
        event("payload: arbitrary bytes")
        payload_raw = draw(st.binary(max_size=64))
    return target, header_raw, payload_raw, target.sign(header_raw, payload_raw)


@fuzz(300)
@given(odd_signed_token())
def test_signed_odd_json_follows_the_documented_rules(
    case: tuple[Subject, bytes, bytes, str],
) -> None:
    """Correctly signed tokens whose header and payload are near-misses (odd types, duplicate
    members, deep nesting, time edges, look-alike issuers, audiences, algs and typs): every
    entry point accepts exactly what an independent restatement of the rules accepts, with the
    same claims, and refuses the rest with the documented exception only."""
    target, header_raw, payload_raw, token = case
    verdicts = every_verdict(target, token)
    for name, (verdict, detail) in verdicts.items():
        expected = reference_verdict(
            header_raw,
            payload_raw,
            alg=target.alg,
            kid=target.key.kid,
            issuer=ISSUER,
            audience=audience_of(name),
            now=NOW,
            leeway=LEEWAY_SECONDS,
        )
        if expected is None:
            assert verdict == "refused", (name, verdicts)
        else:
            assert verdict == "accepted", (name, detail, expected)
            assert same_json(detail, expected), (name, detail, expected)
    verdict, detail = verdicts["verify_compact"]
    event(f"verdict: {verdict if verdict == 'accepted' else detail}")


# -- refresh tokens ----------------------------------------------------------------------------

REFRESH = RefreshTokenCodec(b"fuzz tests: the refresh HMAC key, 32+ bytes")
OTHER_REFRESH = RefreshTokenCodec(b"fuzz tests: another server's refresh HMAC key")


@fuzz(300)
@given(hostile_text(max_size=120))
def test_refresh_tokens_refuse_any_text(text: str) -> None:
    with pytest.raises(TokenError):
        REFRESH.parse(text)


@fuzz(400)
@given(st.uuids(), st.integers(0, 2**64 - 1), st.uuids(), st.data())
def test_mutated_refresh_tokens_never_name_another_session(
    session: uuid.UUID, generation: int, other: uuid.UUID, data: st.DataObject
) -> None:
    """A valid refresh token, mutated (bit flips, splices with tokens of another session,
    generation or server, ...): TokenError, or an issued token back, character for character,
    naming its own (session, generation)."""
    original = REFRESH.issue(str(session), generation)
    valid = {
        REFRESH.issue(str(sid), gen): (str(sid), gen)
        for sid, gen in [(session, generation), (other, generation), (session, generation ^ 1)]
    }
    donors = [*valid, OTHER_REFRESH.issue(str(session), generation)]
    token = data.draw(mutated(original, donors), label="mutated")
    try:
        presented = REFRESH.parse(token)
    except TokenError as exc:
        event(f"reason: {exc.reason}")
        return
    # Only a token this server issued parses, to the pair it was issued for; no second
    # spelling of it, no splice of two of them.
    assert token in valid, "a refresh token this server never issued parses"
    assert (presented.session_id, presented.generation) == valid[token]
    event("mutations gave an issued token back")


# -- HTTP -----------------------------------------------------------------------------------


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[AppHarness]:
    with AppHarness(tmp_path / "fuzz-data") as running:
        yield running


@dataclass
class Account:
    email: str
    access_token: str
    refresh_token: str


@pytest.fixture
def account(harness: AppHarness) -> Account:
    """A user signed in once for the whole test (all its examples)."""
    return sign_up(harness, "fuzz@example.com")


def sign_up(harness: AppHarness, email: str) -> Account:
    assert harness.request(
        "POST", "/auth/register", json={"email": email, "password": PASSWORD}
    ).is_success
    response = harness.request("POST", "/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    cookie = response.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
    return Account(email, response.json()["access_token"], cookie)


def send(harness: AppHarness, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
    """The response, or None when httpx itself refuses to build the request (skipped)."""
    assert harness.client is not None
    try:
        request = harness.client.build_request(method, url, **kwargs)
    except (UnicodeEncodeError, ValueError, TypeError, httpx.HTTPError) as exc:
        event(f"httpx refused the request ({type(exc).__name__})")
        return None
    response = harness.run(harness.client.send(request))
    event(f"{method} {url}: {response.status_code}")
    return response


def content_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip()


def assert_sound(response: httpx.Response, *, secrets: tuple[str, ...] = ()) -> None:
    """Never a 5xx; an error is problem+json with its status; no secret comes back."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert content_type(response) == PROBLEM_JSON, (response.status_code, response.text)
        assert response.json()["status"] == response.status_code
    assert_no_echo(response, secrets)


# What an answer may contain without echoing anything: a short or common "password" is allowed
# to occur in it by coincidence.
_STATIC_TEXT = (
    "urn:tokenward:problem: invalid_request invalid_grant unsupported_grant_type error "
    "error_description the request body does not match the schema Invalid request email or "
    "password is incorrect username and password are required refresh_token is required "
    "the refresh token is invalid, expired or revoked use password or refresh_token "
    "grant_type is required Invalid credentials Invalid email email is not a valid address "
    "Password rejected password_too_short password_too_long password_common Bearer"
)


def spellings(secret: str) -> set[str]:
    """``secret`` as it may appear in JSON text: raw, or escaped with or without ASCII."""
    return {secret, dumps(secret)[1:-1], dumps(secret, ensure_ascii=False)[1:-1]}


def assert_no_echo(response: httpx.Response, secrets: tuple[str, ...]) -> None:
    body = response.text
    for secret in secrets:
        if len(secret) < 8 or secret in _STATIC_TEXT:
            continue
        for spelling in spellings(secret):
            assert spelling not in body, f"the password came back: {body[:300]}"


class _Members(list[tuple[str, Any]]):
    """A JSON object as its members in order, duplicates kept."""


def passwords_in(body: bytes) -> tuple[str, ...]:
    """The ``password`` members of a JSON body, each unless its text is elsewhere in the
    request too (a member name or the email, say): that coming back is no echo of it."""
    try:
        top = json.loads(body, object_pairs_hook=_Members)
    except (ValueError, RecursionError):
        return ()
    if not isinstance(top, _Members):
        return ()
    found = []
    for index, (name, value) in enumerate(top):
        if name == "password" and isinstance(value, str):
            rest = [*top[:index], *top[index + 1 :]]
            text = dumps(rest) + dumps(rest, ensure_ascii=False)
            if not any(spelling in text for spelling in spellings(value)):
                found.append(value)
    return tuple(found)


def cookie_header(valid: str) -> st.SearchStrategy[bytes | None]:
    """Cookie headers: arbitrary bytes, the refresh cookie with any value or a mutated one,
    several cookies, quoting."""
    value = st.one_of(
        st.text(PRINTABLE_LATIN1, max_size=120),
        mutated(valid),
        st.text(B64URL, min_size=76, max_size=76).map(lambda tail: "twr_" + tail),
    )
    header = st.one_of(
        st.text(PRINTABLE_LATIN1, max_size=200),
        value.map(lambda v: f"tw_refresh={v}"),
        value.map(lambda v: f'tw_refresh="{v}"'),
        st.tuples(value, value).map(lambda vs: f"tw_refresh={vs[0]}; tw_refresh={vs[1]}"),
        value.map(lambda v: f"a=b; tw_refresh={v}; c"),
        value.map(lambda v: f"__Secure-tw_refresh={v}"),
    )
    return header.map(latin1_bytes)


@fuzz(150)
@given(data=st.data())
def test_refresh_and_logout_answer_any_cookie(
    harness: AppHarness, account: Account, data: st.DataObject
) -> None:
    """POST /auth/refresh and /auth/logout with any Cookie header: 401 problem+json (the
    cookie cleared) or, only when the real token is in it, 200; logout always 204."""
    cookie = data.draw(cookie_header(account.refresh_token), label="cookie")
    if cookie is None:
        event("header value httpx cannot send: skipped")
        return
    response = send(harness, "POST", "/auth/refresh", headers=[(b"cookie", cookie)])
    if response is None:
        return
    # The one refresh cookie as the server reads it (a quoted value is unquoted, "\w" is "w").
    read = [
        value
        for pair in cookie.decode("latin-1").split(";")
        for name, value in cookie_parser(pair).items()
        if name == "tw_refresh"
    ]
    carries_the_token = read == [account.refresh_token]
    if response.status_code == 200:
        assert carries_the_token, cookie
    else:
        assert response.status_code == 401, response.text
        assert_sound(response)
        assert 'tw_refresh=""' in response.headers["set-cookie"]
    if carries_the_token:
        return  # logging the fuzzed session out would leave nothing to refresh
    logout = send(harness, "POST", "/auth/logout", headers=[(b"cookie", cookie)])
    assert logout is not None and logout.status_code == 204, logout and logout.text


AUTH_SCHEMES = ["Bearer", "bearer", "BEARER", "Bearer:", "Basic", "Token", "", "Bearer\t"]


@fuzz(200)
@given(data=st.data())
def test_me_answers_any_authorization_header(
    harness: AppHarness, account: Account, data: st.DataObject
) -> None:
    """GET /auth/me with any Authorization header(s): 401 problem+json with a Bearer
    challenge, or 200 only when the real access token is in it."""
    token = st.one_of(
        mutated(account.access_token),
        st.just(account.access_token),
        st.text(PRINTABLE_LATIN1, max_size=200),
        st.sampled_from(["", " ", "null", "undefined", "A" * 9000]),
    )
    value = st.one_of(
        st.text(PRINTABLE_LATIN1, max_size=300),
        st.builds(
            lambda scheme, gap, credentials: f"{scheme}{gap}{credentials}",
            st.sampled_from(AUTH_SCHEMES),
            st.sampled_from([" ", "  ", "\t", "", " \t"]),
            token,
        ),
    )
    values = data.draw(st.lists(value, min_size=0, max_size=3), label="authorization")
    raw = [latin1_bytes(v) for v in values]
    if any(v is None for v in raw):
        event("header value httpx cannot send: skipped")
        return
    headers = [(b"authorization", v) for v in raw if v is not None]
    response = send(harness, "GET", "/auth/me", headers=headers)
    if response is None:
        return
    if response.status_code == 200:
        assert any(account.access_token.encode() in v for _, v in headers)
        assert response.json()["email"] == account.email
        return
    assert response.status_code == 401, response.text
    assert_sound(response)
    assert response.headers["www-authenticate"].startswith('Bearer realm="tokenward"')


FORM = "application/x-www-form-urlencoded"


def multipart(fields: list[tuple[str, str]], boundary: str) -> bytes:
    parts = b"".join(
        b"--" + boundary.encode("latin-1") + b"\r\n"
        b'Content-Disposition: form-data; name="' + text_bytes(name) + b'"\r\n\r\n'
        b"" + text_bytes(value) + b"\r\n"
        for name, value in fields
    )
    return parts + b"--" + boundary.encode("latin-1") + b"--\r\n"


@dataclass(frozen=True)
class TokenRequest:
    content_type: bytes
    body: bytes
    secrets: tuple[str, ...] = ()
    """The password sent, unless the same text is elsewhere in the request too."""
    may_grant: bool = False
    """The real password or refresh token is in it: a 200 is possible."""


@st.composite
def token_request(draw: st.DrawFn, email: str, refresh_token: str) -> TokenRequest:
    """A POST /auth/token body: raw bytes, or fields near a valid grant (left out, repeated,
    odd values), form-encoded or multipart."""
    if rarely(draw, 6):
        event("token body: raw bytes")
        body = draw(st.binary(max_size=400))
        ctype = draw(
            st.sampled_from(
                [FORM, "multipart/form-data; boundary=XyZ", "multipart/form-data", "text/plain"]
            )
        )
        if ctype.endswith("XyZ") and draw(st.booleans()):
            body = b"--XyZ\r\n" + body
        return TokenRequest(ctype.encode(), body)
    grant = draw(
        st.one_of(
            st.sampled_from(["password", "refresh_token", "PASSWORD", "client_credentials", ""]),
            st.text(max_size=12),
        )
    )
    password = draw(st.one_of(st.just(PASSWORD), st.text(max_size=40), st.just("x" * 2000)))
    fields = [
        ("grant_type", grant),
        ("username", draw(st.one_of(st.just(email), st.just(email.upper()), st.text()))),
        ("password", password),
        ("refresh_token", draw(st.one_of(mutated(refresh_token), hostile_text(100)))),
        ("scope", draw(st.text(max_size=10))),
    ]
    fields = [f for f in fields if not rarely(draw, 6)]  # some left out
    if fields and rarely(draw, 5):
        event("token body: repeated field")
        fields.append((draw(st.sampled_from(fields))[0], draw(st.text(max_size=20))))
    if rarely(draw, 5):
        fields.append((draw(st.text(max_size=10)), draw(st.text(max_size=10))))
    others = [text for field in fields if field != ("password", password) for text in field]
    secrets = () if any(password in other for other in others) else (password,)
    values = {value for _, value in fields}
    may_grant = PASSWORD in values or refresh_token in values
    if draw(st.booleans()):
        event("token body: form-encoded fields")
        body = urlencode(fields, encoding="utf-8", errors="surrogatepass").encode("ascii")
        return TokenRequest(FORM.encode(), body, secrets, may_grant)
    event("token body: multipart fields")
    boundary = draw(st.text(B64URL, min_size=1, max_size=20))
    ctype = f"multipart/form-data; boundary={boundary}".encode()
    return TokenRequest(ctype, multipart(fields, boundary), secrets, may_grant)


def unparseable_body(response: httpx.Response) -> bool:
    """The documented exception to RFC 6749's shape on /auth/token: a body the form parser
    cannot read at all is a 400 problem ``http-error``, like on every other endpoint."""
    return (
        response.status_code == 400
        and content_type(response) == PROBLEM_JSON
        and response.json().get("type") == "urn:tokenward:problem:http-error"
    )


@fuzz(200)
@given(data=st.data())
def test_token_endpoint_answers_any_form(
    harness: AppHarness, account: Account, data: st.DataObject
) -> None:
    """POST /auth/token with any body: 400/401 in RFC 6749's shape (a body that does not parse:
    400 problem+json), 413/422 problem+json, 200 only for a real grant; never a 5xx, never the
    password back."""
    request = data.draw(token_request(account.email, account.refresh_token))
    headers = [(b"content-type", request.content_type)]
    response = send(harness, "POST", "/auth/token", content=request.body, headers=headers)
    assert response is not None
    assert response.status_code < 500, response.text
    assert_no_echo(response, request.secrets)
    if response.status_code == 200:
        assert request.may_grant
        assert set(response.json()) == {"access_token", "token_type", "expires_in", "refresh_token"}
    elif response.status_code in (400, 401):
        if unparseable_body(response):
            event("unparseable body: 400 problem+json")
            return
        assert content_type(response) == "application/json", response.text
        assert set(response.json()) == {"error", "error_description"}, response.text
    else:
        assert_sound(response)


EMAILS = st.one_of(
    st.just("fuzz@example.com"),
    st.uuids().map(lambda u: f"{u.hex[:12]}@example.com"),
    st.text(max_size=40),
    st.builds(lambda local: f"{local}@example.com", st.text(max_size=20)),
    st.sampled_from(["a@b", "@example.com", "a@example.com\x00", "A" * 300 + "@example.com"]),
)
PASSWORDS = st.one_of(
    st.just(PASSWORD),
    st.text(max_size=40),
    st.text(min_size=15, max_size=140),
    st.sampled_from(["password" * 2, "x" * 1025, "correct horse \x00 battery staple"]),
)


@st.composite
def credentials_body(draw: st.DrawFn) -> bytes:
    """A JSON-ish body for /auth/register and /auth/login."""
    shape = draw(st.sampled_from(["object", "object", "object", "any JSON", "bytes"]))
    event(f"credentials body: {shape}")
    if shape == "bytes":
        return draw(st.binary(max_size=300))
    if shape == "any JSON":
        return text_bytes(dumps(draw(json_values)))
    members = {"email": draw(EMAILS), "password": draw(PASSWORDS)}
    odd = st.one_of(json_values, EMAILS, PASSWORDS)
    text = draw(json_object_text(members, odd_values=odd, extra_names=st.text(max_size=8)))
    if rarely(draw, 10):
        event("credentials body: padded past 16 KiB")
        text += " " * (16 * 1024)
    return text_bytes(text)


@fuzz(200)
@given(st.sampled_from(["/auth/register", "/auth/login"]), credentials_body())
def test_register_and_login_answer_any_json(
    harness: AppHarness, account: Account, path: str, body: bytes
) -> None:
    """Any JSON-ish body: 201/200, or problem+json 400 (unparseable) 401/409/413/422; never
    the password back."""
    ctype = b"application/json"
    response = send(harness, "POST", path, content=body, headers=[(b"content-type", ctype)])
    assert response is not None
    assert_sound(response, secrets=passwords_in(body))
    assert response.status_code in {200, 201, 400, 401, 409, 413, 422}, response.text
    if response.status_code == 400:  # not UTF-8, say: the body does not parse
        assert unparseable_body(response), response.text
    if response.status_code == 201:
        assert path == "/auth/register"
    if response.status_code == 200:
        assert path == "/auth/login" and "access_token" in response.json()


# -- the JWKS client -------------------------------------------------------------------------

JWKS_URL = "https://auth.example/.well-known/jwks.json"


@dataclass(frozen=True)
class Published:
    """A P-256 key as tokenward publishes it, and a token it signed."""

    jwk: dict[str, Any]
    token: str


@cache
def published() -> Published:
    target = subject("ES256")
    jwk = dict(target.key.public_jwk or {})
    return Published(jwk, target.tokens[0])


def _other_jwk() -> dict[str, Any]:
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
        "kid": "other",
        "alg": "ES256",
        "use": "sig",
    }


JWK_VALUES = st.one_of(
    json_values,
    st.sampled_from(
        ["ES256", "ES384", "RS256", "HS256", "none", "EdDSA", "P-256", "P-384", "Ed25519"]
    ),
    st.sampled_from(["EC", "RSA", "OKP", "oct", "sig", "enc", ["verify"], ["sign"], "AQAB"]),
    st.text(B64URL, max_size=90),
)
JWK_NAMES = st.sampled_from(["d", "k", "n", "e", "key_ops", "use", "x5c", "oth", "crv", "kid"])


@dataclass(frozen=True)
class JwksAnswer:
    """What the JWKS endpoint answers: a fresh response for each request."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def __call__(self, _request: httpx.Request) -> httpx.Response:
        return httpx.Response(self.status, headers=list(self.headers), content=self.body)


@st.composite
def jwks_response(draw: st.DrawFn) -> JwksAnswer:
    """A JWKS answer: the real set with its key mutated, as JSON or as damaged text, other
    keys beside it, arbitrary JSON or bytes, odd statuses and Cache-Control headers."""
    real = published().jwk
    kind = draw(st.sampled_from(["jwk", "intact jwk", "text", "any JSON", "bytes", "nested"]))
    event(f"jwks: {kind}")
    if kind in {"jwk", "intact jwk", "text"}:
        jwk_text = draw(
            json_object_text(
                real, odd_values=JWK_VALUES, extra_names=JWK_NAMES, intact=kind == "intact jwk"
            )
        )
        keys = [jwk_text]
        if draw(st.booleans()):
            keys.insert(draw(st.integers(0, 1)), dumps(_other_jwk()))
        if draw(st.integers(0, 5)) == 0:
            keys.append(draw(st.sampled_from([jwk_text, dumps(real), "null", "[]", '"k"'])))
        text = '{"keys": [' + ",".join(keys) + "]}"
        if kind == "text":
            text = draw(mutated(text))
        body = text_bytes(text)
    elif kind == "any JSON":
        value = draw(json_values)
        body = text_bytes(dumps({"keys": value} if draw(st.booleans()) else value))
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
    else:
        depth = draw(st.sampled_from([10, 200, 900, 5000, 100_000]))
        where = draw(st.sampled_from(["top", "keys", "member"]))
        nest = "[" * depth + "]" * depth
        body = text_bytes(
            {
                "top": nest,
                "keys": '{"keys": ' + nest + "}",
                "member": '{"keys": [' + dumps({**real, "x": None}).replace("null", nest) + "]}",
            }[where]
        )
    status = draw(st.sampled_from([200] * 6 + [204, 301, 304, 404, 500, 503]))
    headers: list[tuple[bytes, bytes]] = []
    cache_control = draw(
        st.one_of(
            st.none(),
            st.text(PRINTABLE_LATIN1, max_size=40),
            st.integers(-(10**20), 10**20).map(lambda n: f"public, max-age={n}"),
            st.sampled_from(["max-age=" + "9" * n for n in (20, 308, 309, 400, 5000)]),
            st.sampled_from(["no-store", "max-age=1e9", 'max-age="60"', "max-age=", "max-age"]),
        )
    )
    if cache_control is not None and (raw := latin1_bytes(cache_control)) is not None:
        headers.append((b"cache-control", raw))
    ctype = draw(st.sampled_from([b"application/json", b"text/html", b"application/jwk-set+json"]))
    headers.append((b"content-type", ctype))
    return JwksAnswer(status, tuple(headers), body)


def check_jwks_outcome(call: Callable[[], Any]) -> None:
    try:
        claims = call()
    except VerificationError as exc:
        event(f"refused: {exc.reason}")
        return
    event("accepted")
    assert claims.sub == "user-0" and claims.iss == ISSUER


@fuzz(250)
@given(answer=jwks_response())
def test_jwks_client_survives_any_key_set(answer: JwksAnswer) -> None:
    """Whatever the JWKS endpoint answers, Verifier.verify gives claims (only when the real
    key is in it) or a VerificationError (VerifierUnavailableError when no set was usable)."""
    transport = httpx.MockTransport(answer)
    with Verifier(ISSUER, jwks_url=JWKS_URL, transport=transport, clock=FixedClock()) as verifier:
        check_jwks_outcome(lambda: verifier.verify(published().token))


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@fuzz(100)
@given(answer=jwks_response())
def test_jwks_client_survives_any_key_set_async(runner: asyncio.Runner, answer: JwksAnswer) -> None:
    """The same through Verifier.averify."""
    transport = httpx.MockTransport(answer)
    verifier = Verifier(ISSUER, jwks_url=JWKS_URL, transport=transport, clock=FixedClock())

    async def verify() -> Claims:
        try:
            return await verifier.averify(published().token)
        finally:
            await verifier.aclose()

    check_jwks_outcome(lambda: runner.run(verify()))


# -- regressions: bugs the tests above found ----------------------------------------------


def _served(body: bytes, **headers: str) -> Verifier:
    answer = JwksAnswer(200, tuple((k.encode(), v.encode()) for k, v in headers.items()), body)
    return Verifier(
        ISSUER, jwks_url=JWKS_URL, transport=httpx.MockTransport(answer), clock=FixedClock()
    )


def test_a_deeply_nested_jwks_is_a_failed_fetch() -> None:
    """A JWKS body nested 100 000 deep (100 KB, under the 1 MiB cap) is a failed fetch."""
    from tokenward.verify import VerifierUnavailableError

    with _served(b"[" * 100_000) as verifier, pytest.raises(VerifierUnavailableError):
        verifier.verify(published().token)


def test_a_huge_jwks_max_age_is_clamped() -> None:
    """max-age=9...9 (309 digits) is clamped to the 1 h ceiling like any other large value."""
    body = json.dumps({"keys": [published().jwk]}).encode()
    with _served(body, **{"cache-control": "max-age=" + "9" * 309}) as verifier:
        assert verifier.verify(published().token).sub == "user-0"


def test_a_revocation_feed_with_a_huge_number_is_off_contract() -> None:
    from tokenward.verify._revocation import parse_feed_page

    with pytest.raises(ValueError):
        parse_feed_page({"revoked": [{"sid": "s", "revoked_at": 10**400}], "cursor": "c"})
