"""A real Prometheus (Debian's package, installed by `make test` when missing) scrapes a real
`tokenward serve --workers 2`, loads docs/prometheus/alerts.yml, and after scripted traffic
its HTTP query API answers the sums over both workers; the reuse alert fires."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from support import COOKIE, PASSWORD, free_port, server_process

pytestmark = pytest.mark.sqlite_only

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
RULES = Path(__file__).resolve().parents[1] / "docs" / "prometheus" / "alerts.yml"
EMAIL = "ada@example.com"
REFRESHES = 6
PROBES = 40
REUSED = 'sum(tokenward_refreshes_total{result="reuse_detected"})'


@contextmanager
def prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    """Prometheus scraping ``target`` every second, with tokenward's example alert rules."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: tokenward\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = tmp_path / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _ready(base), f"prometheus did not start: {log.read_text()[-2000:]}")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_prometheus_scrapes_the_sum_over_two_workers(tmp_path: Path) -> None:
    shared = tmp_path / "multiproc"
    shared.mkdir()
    (shared / "counter_999999.db").write_bytes(b"an earlier run's file")  # emptied by serve
    metrics_port = free_port()
    env = {
        "TOKENWARD_METRICS": "on",
        "TOKENWARD_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
        "TOKENWARD_REFRESH_REUSE_INTERVAL": "0",  # a rotated-out token is reuse at once
        "TOKENWARD_LOG_LEVEL": "warning",
    }
    with (
        server_process(tmp_path / "data", args=["--workers", "2"], **env) as server,
        prometheus(tmp_path, f"127.0.0.1:{metrics_port}") as prom,
    ):
        assert not (shared / "counter_999999.db").exists()
        # Scraped once before the traffic, as a long-running Prometheus would have: every
        # series is there at 0, so that increase() sees what comes next.
        _wait(lambda: _query(prom, REUSED) == 0, lambda: _query(prom, REUSED))
        activated = _query(prom, "max(tokenward_signing_key_created_timestamp_seconds)")
        assert activated is not None and abs(activated - time.time()) < 120
        # The public port has no metrics.
        assert httpx.get(f"{server.base}/metrics").status_code == 404
        _scripted_traffic(server.base)
        # New connections, 8 at a time, until each worker has answered some (which one
        # accepts a connection is the kernel's choice): the figures below are sums over both.
        probes = 0
        with ThreadPoolExecutor(8) as pool:
            while probes < PROBES or not _both_answered(shared):
                assert probes < 50 * PROBES, _healthz_per_worker(shared)
                answers = list(pool.map(lambda _: _probe(server.base), range(8)))
                assert answers == [200] * 8
                probes += 8

        expected = {
            'sum(tokenward_logins_total{result="failed",method="password"})': 3,
            'sum(tokenward_logins_total{result="succeeded",method="password"})': 1,
            'sum(tokenward_refreshes_total{result="rotated"})': REFRESHES,
            REUSED: 1,
            'sum(tokenward_sessions_ended_total{reason="reuse_detected"})': 1,
            'sum(tokenward_security_events_total{type="login.failed"})': 3,
            'sum(tokenward_security_events_total{type="session.reuse_detected"})': 1,
            'sum(tokenward_http_requests_total{route="/auth/refresh"})': REFRESHES + 1,
            # The probes, and the one that saw the server start.
            'sum(tokenward_http_requests_total{route="/healthz"})': probes + 1,
            'sum(tokenward_http_request_duration_seconds_count{route="/auth/login"})': 4,
            "sum(tokenward_password_hash_duration_seconds_count)": 5,
            "count(tokenward_build_info)": 1,
        }

        def settled() -> bool:
            return all(_query(prom, query) == value for query, value in expected.items())

        _wait(settled, lambda: {query: _query(prom, query) for query in expected})
        per_worker = _healthz_per_worker(shared)
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker
        assert sum(per_worker.values()) == probes + 1

        # The example rules loaded and evaluate; reuse fired its alert.
        _wait(lambda: "TokenwardRefreshTokenReuse" in _firing(prom), lambda: _firing(prom))
        rules = httpx.get(f"{prom}/api/v1/rules").json()["data"]["groups"]
        [group] = rules
        assert len(group["rules"]) == len(_rule_names())
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule
        targets = httpx.get(f"{prom}/api/v1/targets").json()["data"]["activeTargets"]
        assert [target["health"] for target in targets] == ["up"]


def _scripted_traffic(base: str) -> None:
    """3 failed logins, a login, REFRESHES refreshes, then the first refresh token again."""
    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=base, limits=fresh) as client:
        registered = client.post("/auth/register", json={"email": EMAIL, "password": PASSWORD})
        assert registered.status_code == 201
        for _ in range(3):
            wrong = client.post("/auth/login", json={"email": EMAIL, "password": "wrong " * 4})
            assert wrong.status_code == 401
        login = client.post("/auth/login", json={"email": EMAIL, "password": PASSWORD})
        assert login.status_code == 200
        first = login.cookies[COOKIE]
        for _ in range(REFRESHES):
            assert client.post("/auth/refresh").status_code == 200
    reused = httpx.post(f"{base}/auth/refresh", headers={"Cookie": f"{COOKIE}={first}"})
    assert reused.status_code == 401


def _probe(base: str) -> int:
    return httpx.get(f"{base}/healthz").status_code


def _healthz_per_worker(shared: Path) -> dict[str, float]:
    """Each worker's own count of /healthz answers, read from a copy of its own file."""
    found: dict[str, float] = {}
    for file in shared.glob("counter_*.db"):
        alone = shared.parent / f"one-{file.stem}"
        shutil.rmtree(alone, ignore_errors=True)
        alone.mkdir()
        shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        labels = {"route": "/healthz", "method": "GET", "status": "200"}
        value = registry.get_sample_value("tokenward_http_requests_total", labels)
        found[file.stem] = value or 0.0
    return found


def _both_answered(shared: Path) -> bool:
    per_worker = _healthz_per_worker(shared)
    return len(per_worker) == 2 and all(per_worker.values())


def _query(prom: str, query: str) -> float | None:
    answer = httpx.get(f"{prom}/api/v1/query", params={"query": query}).json()
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _firing(prom: str) -> set[str]:
    alerts = httpx.get(f"{prom}/api/v1/alerts").json()["data"]["alerts"]
    return {alert["labels"]["alertname"] for alert in alerts if alert["state"] == "firing"}


def _rule_names() -> list[str]:
    return [
        line.split(":", 1)[1].strip()
        for line in RULES.read_text().splitlines()
        if line.strip().startswith("- alert:")
    ]


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _wait(check: Any, explain: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(explain() if callable(explain) else explain)
        time.sleep(0.25)
