"""Forgot-password timing: an address with an account vs one without, against a running
tokenward (docs/email.md: the answer, and the work behind it, tell nothing about the address).

Both queue the same one job row and answer the same 202; the worker decides it later, off the
request path. Requests alternate (account, nobody, nobody, account, ...) so that machine noise
hits both series alike; the result is each median, their ratio, and each IQR. This is the
timing half of tests/test_email_process.py's enumeration test (timing goals live here).

    .venv/bin/python bench/forgot_timing.py --base http://127.0.0.1:8000   # rate limits off!
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import httpx

__all__ = ["ForgotTiming", "measure"]


@dataclass(frozen=True)
class ForgotTiming:
    samples: int
    account_ms: list[float]
    nobody_ms: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.account_ms) / statistics.median(self.nobody_ms)

    def markdown(self) -> str:
        rows = [("address with an account", self.account_ms), ("no account", self.nobody_ms)]
        table = ["| series | median | IQR |", "|---|---|---|"]
        for name, values in rows:
            quartiles = statistics.quantiles(values, n=4)
            table.append(
                f"| {name} | {statistics.median(values):.2f} ms "
                f"| {quartiles[2] - quartiles[0]:.2f} ms |"
            )
        return "\n".join(
            [
                *table,
                "",
                f"Ratio of medians (account / no account): {self.ratio:.3f}; {self.samples} "
                "alternating samples each, sequential, rate limits off, the same 202 bytes.",
            ]
        )


def _timed(client: httpx.Client, email: str, expected: bytes | None) -> tuple[float, bytes]:
    started = time.perf_counter()
    response = client.post("/auth/password/forgot", json={"email": email})
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 202 or (expected is not None and response.content != expected):
        raise RuntimeError(f"forgot: {response.status_code} {response.text[:200]}")
    return elapsed, response.content


def measure(base: str, account: str, samples: int = 60, warmup: int = 5) -> ForgotTiming:
    """``account`` must have an account on the server at ``base``."""
    with httpx.Client(base_url=base, timeout=30) as client:
        _, expected = _timed(client, account, None)
        for n in range(warmup):
            _timed(client, account, expected)
            _timed(client, f"nobody-warmup-{n}@example.com", expected)
        series: tuple[list[float], list[float]] = ([], [])
        for n in range(samples):
            order = (0, 1) if n % 2 == 0 else (1, 0)
            for kind in order:
                email = account if kind == 0 else f"nobody-{n}@example.com"
                series[kind].append(_timed(client, email, expected)[0])
    return ForgotTiming(samples, *series)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--account", required=True, help="an address with an account")
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    print(measure(args.base, args.account, args.samples).markdown())


if __name__ == "__main__":
    main()
