"""Security event types: a stable vocabulary that apps can alert on."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["EventType"]


class EventType(StrEnum):
    """Event types recorded in the audit trail. Values are part of the public contract."""

    USER_REGISTERED = "user.registered"
    USER_IMPORTED = "user.imported"
    LOGIN_SUCCEEDED = "login.succeeded"
    LOGIN_FAILED = "login.failed"
    REFRESH = "session.refreshed"
    REFRESH_REUSE_DETECTED = "session.reuse_detected"
    """A rotated-out refresh token came back after the reuse interval; the session was ended.

    ``detail``: ``rotated_seconds_ago`` (time since the session's last rotation),
    ``generations_behind`` (1 means the token was the one just rotated out), and
    ``first_use`` / ``reuse``: the IP and User-Agent of the rotation and of the replay.
    """
    LOGOUT = "session.logout"
