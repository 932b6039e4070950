"""Login timing: unknown email vs wrong password, against a running tokenward.

The claim under test (docs/security.md): an unknown email costs the same hash verification as
a wrong password, so response time does not reveal whether an account exists. Requests
alternate (unknown, wrong, unknown, ...) so that machine noise hits both series alike; the
result is the difference of medians next to the spread (IQR) of the wrong-password series.

    .venv/bin/python bench/login_timing.py --base http://127.0.0.1:8000   # rate limits off!
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import httpx

EMAIL = "timing@example.com"
PASSWORD = "violet tangerine ladder 42"


@dataclass(frozen=True)
class LoginTiming:
    samples: int
    unknown_median_ms: float
    wrong_median_ms: float
    wrong_iqr_ms: float
    unknown_iqr_ms: float

    @property
    def difference_ms(self) -> float:
        return self.unknown_median_ms - self.wrong_median_ms

    @property
    def ratio(self) -> float:
        return self.unknown_median_ms / self.wrong_median_ms

    def markdown(self) -> str:
        return "\n".join(
            [
                "| series | median | IQR |",
                "|---|---|---|",
                _row("unknown email", self.unknown_median_ms, self.unknown_iqr_ms),
                _row("wrong password", self.wrong_median_ms, self.wrong_iqr_ms),
                "",
                f"Difference of medians: {self.difference_ms:+.1f} ms "
                f"(unknown / wrong = {self.ratio:.3f}), against a wrong-password IQR of "
                f"{self.wrong_iqr_ms:.1f} ms; {self.samples} alternating samples each, "
                "sequential, rate limits off.",
            ]
        )


def _row(series: str, median: float, iqr: float) -> str:
    return f"| {series} | {median:.1f} ms | {iqr:.1f} ms |"


def _iqr(values: list[float]) -> float:
    quartiles = statistics.quantiles(values, n=4)
    return quartiles[2] - quartiles[0]


def _timed_login(client: httpx.Client, email: str) -> float:
    started = time.perf_counter()
    response = client.post("/auth/login", json={"email": email, "password": "wrong " + PASSWORD})
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 401:
        raise RuntimeError(f"expected 401, got {response.status_code}: {response.text[:200]}")
    return elapsed


def measure(base: str, samples: int = 40, warmup: int = 5) -> LoginTiming:
    """Register the probe user (if needed), warm up, then alternate the two kinds of failure."""
    with httpx.Client(base_url=base, timeout=30) as client:
        client.post("/auth/register", json={"email": EMAIL, "password": PASSWORD})
        for _ in range(warmup):
            _timed_login(client, EMAIL)
            _timed_login(client, "nobody-warmup@example.com")
        unknown: list[float] = []
        wrong: list[float] = []
        for n in range(samples):
            unknown.append(_timed_login(client, f"nobody-{n}@example.com"))
            wrong.append(_timed_login(client, EMAIL))
    return LoginTiming(
        samples=samples,
        unknown_median_ms=statistics.median(unknown),
        wrong_median_ms=statistics.median(wrong),
        wrong_iqr_ms=_iqr(wrong),
        unknown_iqr_ms=_iqr(unknown),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()
    print(measure(args.base, args.samples).markdown())


if __name__ == "__main__":
    main()
