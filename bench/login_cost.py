"""Login latency next to the password hash it is built around.

tokenward: sequential logins against the running server, interleaved with the in-process
time of ``PasswordHasher().verify`` on an argon2id hash made with the same defaults, pinned
to the server core as the server is. The overhead (login p50 - hash p50, as a share of hash p50) is
what the HTTP layer, the database and token signing add to a login: the target is <= 10%.
Express: its login p50 and its bcrypt cost, read from its source (bcryptjs: pure JavaScript).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from accounts import EMAIL, PASSWORD
from servers import LOAD_CORE, PEER_COPY, SERVER_CORE, Server, pinned_to

from tokenward.core.passwords import PasswordHasher

HASH = "argon2 verify, in-process"


@dataclass(frozen=True)
class LoginCost:
    server: str
    samples: int
    login_p50_ms: float
    login_p90_ms: float
    hash_name: str
    hash_p50_ms: float | None  # measured for tokenward only

    @property
    def overhead(self) -> float | None:
        """(login p50 - hash p50) / hash p50."""
        if self.hash_p50_ms is None:
            return None
        return (self.login_p50_ms - self.hash_p50_ms) / self.hash_p50_ms


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def timed_login(client: httpx.Client, server: Server) -> float:
    body = {"email": EMAIL, "password": PASSWORD}
    started = time.perf_counter()
    response = client.post(server.base_url + server.api.login, json=body)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{server.name}: login -> {response.status_code}")
    return elapsed


def hash_verify(hasher: PasswordHasher, stored: str) -> float:
    started = time.perf_counter()
    matches, _ = hasher.verify(PASSWORD, stored)
    elapsed = (time.perf_counter() - started) * 1000
    if not matches:
        raise RuntimeError("the bench's own argon2 hash did not verify")
    return elapsed


def interleaved_times(
    servers: Sequence[Server], samples: int, warmup: int = 2
) -> tuple[str, dict[str, list[float]]]:
    """Login on each server in turn, then one in-process hash: noise hits all series alike.

    The logins' client runs on the load core; the hash on the server core, as the server's
    hash runs. Returns the hash's parameters and ms per sample for each series ("hash" too).
    """
    hasher = PasswordHasher()
    stored = hasher.hash(PASSWORD)
    name = " ".join(stored.split("$")[1:4:2])  # "argon2id m=65536,t=3,p=4"
    times: dict[str, list[float]] = {server.name: [] for server in servers} | {HASH: []}
    with httpx.Client(timeout=30) as client, pinned_to(LOAD_CORE):
        for n in range(warmup + samples):
            sample = {server.name: timed_login(client, server) for server in servers}
            with pinned_to(SERVER_CORE):
                sample[HASH] = hash_verify(hasher, stored)
            if n >= warmup:
                for series, elapsed in sample.items():
                    times[series].append(elapsed)
    return name, times


def express_bcrypt_cost() -> str:
    source = (PEER_COPY / "server.js").read_text()
    found = re.search(r"bcrypt\.hash\(\s*\w+\s*,\s*(\d+)\s*\)", source)
    return f"bcrypt cost {found[1]} (bcryptjs)" if found else "bcrypt (cost not found)"


def measure(servers: Sequence[Server], samples: int = 20) -> list[LoginCost]:
    hash_name, times = interleaved_times(servers, samples)
    hash_p50 = statistics.median(times[HASH])
    return [
        LoginCost(
            server=server.name,
            samples=samples,
            login_p50_ms=statistics.median(times[server.name]),
            login_p90_ms=percentile(times[server.name], 0.9),
            hash_name=hash_name if server.is_tokenward else express_bcrypt_cost(),
            hash_p50_ms=hash_p50 if server.is_tokenward else None,
        )
        for server in servers
    ]
