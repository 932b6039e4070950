"""Per-token cost of tokenward.verify.Verifier against the floor: the bare ES256 check.

Run from the repository root::

    .venv/bin/python bench/verifier.py            # the markdown table
    .venv/bin/python bench/verifier.py --profile  # and where a Verifier's time goes

Everything is in-process. The floor is ``public_key.verify(der_signature, signing_input,
ECDSA(SHA256()))`` with the DER signature and signing input prepared beforehand: what no
verifier can go below. Each series verifies the same distinct tokens (a fresh ``jti`` each)
in interleaved rounds, with the garbage collector paused; the table gives medians over rounds.
``measure()`` returns the table for bench/run.py.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import io
import json
import platform
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tokenward.verify import Verifier

ISSUER = "https://auth.example"
KID = "bench-key"
FLOOR = "floor: `public_key.verify` (cryptography)"
STATIC = "`Verifier`, static key"
JWKS = "`Verifier`, JWKS (warm)"


@dataclass(frozen=True)
class Material:
    """A key, distinct tokens signed with it, and each token's prepared floor inputs."""

    key: ec.EllipticCurvePrivateKey
    tokens: list[str]
    floor_inputs: list[tuple[bytes, bytes]]  # (DER signature, signing input)


def material(count: int) -> Material:
    key = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    tokens, floor_inputs = [], []
    for _ in range(count):
        claims = {
            "iss": ISSUER,
            "sub": str(uuid.uuid4()),
            "iat": now,
            "exp": now + 900,
            "jti": uuid.uuid4().hex,
            "sid": str(uuid.uuid4()),
        }
        token = jwt.encode(claims, key, "ES256", headers={"kid": KID, "typ": "at+jwt"})
        signing_input, _, signature = token.rpartition(".")
        raw = base64.urlsafe_b64decode(signature + "==")
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        tokens.append(token)
        floor_inputs.append((der, signing_input.encode()))
    return Material(key, tokens, floor_inputs)


def jwks_verifier(stuff: Material) -> Verifier:
    """A JWKS-backed Verifier (the JWKS served in-process), already warmed up."""
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(stuff.key.public_key()))
    document = {"keys": [{**jwk, "kid": KID, "alg": "ES256", "use": "sig"}]}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=document, headers={"Cache-Control": "max-age=3600"})

    verifier = Verifier(
        ISSUER, jwks_url=f"{ISSUER}/.well-known/jwks.json", transport=httpx.MockTransport(handler)
    )
    assert verifier.warm_up()
    return verifier


def series(stuff: Material) -> dict[str, Callable[[], None]]:
    """Each series verifies every token once per call."""
    public_key = stuff.key.public_key()
    static = Verifier(ISSUER, key=public_key, kid=KID)
    remote = jwks_verifier(stuff)
    tokens, floor_inputs = stuff.tokens, stuff.floor_inputs
    for token in tokens:  # every series must accept every token, or the timing means nothing
        assert static.verify(token).iss == ISSUER
        assert remote.verify(token).iss == ISSUER

    def floor() -> None:
        for der, signing_input in floor_inputs:
            public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))

    def static_key() -> None:
        for token in tokens:
            static.verify(token)

    def jwks_backed() -> None:
        for token in tokens:
            remote.verify(token)

    def pyjwt_decode() -> None:
        options: Any = {"require": ["iss", "sub", "iat", "exp", "jti", "sid"]}
        for token in tokens:
            jwt.decode(token, public_key, algorithms=["ES256"], issuer=ISSUER, options=options)

    return {
        FLOOR: floor,
        STATIC: static_key,
        JWKS: jwks_backed,
        "reference: `jwt.decode` (PyJWT, full path)": pyjwt_decode,
    }


def timed_rounds(runs: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each series, one sample per round, series interleaved."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up
        run()
    for index in range(rounds):
        names = list(runs)
        names = names[index % len(names) :] + names[: index % len(names)]  # rotate the order
        for name in names:
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter()
                runs[name]()
                samples[name].append(time.perf_counter() - start)
            finally:
                gc.enable()
    return samples


@dataclass(frozen=True)
class Result:
    table: str  # markdown, with a line of facts under it
    ratios: dict[str, float]  # series -> median per-token time over the floor's


def ratios(samples: dict[str, list[float]]) -> dict[str, float]:
    floor = statistics.median(samples[FLOOR])
    return {name: statistics.median(values) / floor for name, values in samples.items()}


def table(samples: dict[str, list[float]], per_call: int) -> str:
    to_floor = ratios(samples)
    lines = [
        "| series | µs/token (median) | spread (min-max) | ratio to floor |",
        "|---|---:|---:|---:|",
    ]
    for name, values in samples.items():
        micros = [value / per_call * 1e6 for value in values]
        median = statistics.median(micros)
        lines.append(
            f"| {name} | {median:.1f} | {min(micros):.1f}-{max(micros):.1f} "
            f"| {to_floor[name]:.2f}x |"
        )
    return "\n".join(lines)


def measure_result(tokens: int = 500, rounds: int = 15) -> Result:
    """The markdown table (µs per token for each series, ratio to the floor) and the ratios."""
    stuff = material(tokens)
    samples = timed_rounds(series(stuff), rounds)
    facts = (
        f"{tokens} distinct ES256 tokens per round, {rounds} interleaved rounds, "
        f"Python {platform.python_version()}, {platform.machine()}"
    )
    return Result(f"{table(samples, tokens)}\n\n{facts}\n", ratios(samples))


def measure(tokens: int = 500, rounds: int = 15) -> str:
    """The markdown table: µs per token for each series and its ratio to the floor."""
    return measure_result(tokens, rounds).table


def profile(tokens: int = 500, repeat: int = 20) -> str:
    """cProfile of the static-key Verifier: where the time over the floor goes."""
    stuff = material(tokens)
    verifier = Verifier(ISSUER, key=stuff.key.public_key(), kid=KID)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        for token in stuff.tokens:
            verifier.verify(token)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(14)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args(argv)
    print(measure(options.tokens, options.rounds))
    if options.profile:
        print(profile(options.tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
