"""The log of a real `tokenward serve`: every line one JSON object, the access lines and
security events as an operator's collector reads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from support import PASSWORD, serving
from support.logcheck import leaks

EMAIL = "ada@example.com"


def _parsed(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines
    return [json.loads(line) for line in lines]  # any line that is not JSON fails here


def test_serve_writes_one_json_object_per_line(tmp_path: Path) -> None:
    """TOKENWARD_LOG_FORMAT=json: uvicorn's lines and tokenward's alike; the access lines of
    the routed and the fast-path requests, their ids, and the security events."""
    env = {"TOKENWARD_LOG_FORMAT": "json", "TOKENWARD_TRUSTED_PROXIES": "127.0.0.1"}
    with serving(tmp_path / "data", **env) as (base, log), httpx.Client(base_url=base) as client:
        registered = client.post("/auth/register", json={"email": EMAIL, "password": PASSWORD})
        assert registered.status_code == 201
        wrong = client.post("/auth/login", json={"email": EMAIL, "password": "wrong " * 4})
        assert wrong.status_code == 401
        login = client.post(
            "/auth/login",
            json={"email": EMAIL, "password": PASSWORD},
            headers={"X-Request-ID": "edge-7:login"},  # from a trusted proxy: kept
        )
        assert login.headers["x-request-id"] == "edge-7:login"
        access = login.json()["access_token"]
        me = client.get("/auth/me", headers={"Authorization": f"Bearer {access}"})
        refreshed = client.post("/auth/refresh")
        missing = client.get("/nowhere/ada@example.com")
        assert (me.status_code, refreshed.status_code, missing.status_code) == (200, 200, 404)
        assert missing.json()["request_id"] == missing.headers["x-request-id"]

    lines = _parsed(log)
    for line in lines:
        assert {"time", "level", "event", "logger"} <= set(line), line
        assert line["time"].endswith("Z"), line
        assert not leaks(json.dumps(line)), line
    assert any(line["logger"] == "uvicorn.error" for line in lines)
    requests = {line["request_id"]: line for line in lines if line["logger"] == "tokenward.access"}
    logged_in = requests["edge-7:login"]
    assert (logged_in["route"], logged_in["status"]) == ("/auth/login", 200)
    assert logged_in["client_ip"] == "127.0.0.1"
    assert logged_in["user_id"] and logged_in["session_id"]
    for answer, route in ((me, "/auth/me"), (refreshed, "/auth/refresh")):
        line = requests[answer.headers["x-request-id"]]
        assert (line["route"], line["status"]) == (route, 200)
        assert line["session_id"] == logged_in["session_id"]
        assert line["duration_ms"] >= 0
    assert requests[missing.headers["x-request-id"]]["route"] is None
    events = [line for line in lines if line["event"] == "security_event"]
    by_type = {line["type"]: line for line in events}
    assert by_type["login.failed"]["detail"] == {"reason": "bad_credentials"}
    assert by_type["login.succeeded"]["request_id"] == "edge-7:login"
    assert by_type["session.refreshed"]["request_id"] == refreshed.headers["x-request-id"]
    assert [line["type"] for line in events].count("login.succeeded") == 1
