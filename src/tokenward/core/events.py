"""Security events: a stable vocabulary that apps can alert on, and who caused them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "LOGIN_OUTCOMES",
    "OPERATOR",
    "Actor",
    "ActorKind",
    "ClientInfo",
    "EventType",
    "LoginMethod",
    "LoginResult",
    "NewEvent",
    "login_outcome",
]


class EventType(StrEnum):
    """Event types recorded in the audit trail. Values are part of the public contract."""

    USER_REGISTERED = "user.registered"
    USER_CREATED = "user.created"
    """An operator created the user (``tokenward users create``)."""
    USER_IMPORTED = "user.imported"
    USER_DISABLED = "user.disabled"
    USER_ENABLED = "user.enabled"
    LOGIN_SUCCEEDED = "login.succeeded"
    LOGIN_FAILED = "login.failed"
    """``detail.reason``: ``bad_credentials`` or ``disabled``."""
    PASSWORD_CHANGED = "password.changed"  # noqa: S105 - an event name, not a password
    REFRESH = "session.refreshed"
    REFRESH_REUSE_DETECTED = "session.reuse_detected"
    """A rotated-out refresh token came back after the reuse interval; the session was ended.

    ``session_id`` is the session that was ended; ``ip`` and ``user_agent`` are the replay's.
    ``detail``: ``rotated_seconds_ago`` (time since the session's last rotation: exactly how long
    after its rotation the token came back when ``generations_behind`` is 1, a lower bound
    otherwise), ``generations_behind``, and ``first_use`` / ``reuse``: the IP and User-Agent of
    the rotation that retired the token and of the replay.
    """
    LOGOUT = "session.logout"
    LOGOUT_ALL = "session.logout_all"
    """The user ended all their sessions (``detail.kept_current`` for logout-others)."""
    SESSION_REVOKED = "session.revoked"
    """One session ended (``detail.by``: ``user``, ``operator``, ``client`` or ``admin_api``
    with ``detail.client_id``)."""
    EMAIL_VERIFICATION_SENT = "email.verification_sent"
    EMAIL_VERIFIED = "email.verified"
    PASSWORD_RESET_REQUESTED = "password.reset_requested"  # noqa: S105 - an event name
    PASSWORD_RESET = "password.reset"  # noqa: S105 - an event name
    EMAIL_CHANGE_REQUESTED = "email.change_requested"
    EMAIL_CHANGE_CANCELLED = "email.change_cancelled"
    EMAIL_CHANGED = "email.changed"
    USER_DELETED = "user.deleted"
    """The account was deleted; its events stay under its opaque id, with no address."""
    EMAIL_SUPPRESSED = "email.suppressed"
    """A mail not sent: ``detail.reason`` (``rate_limited``, ``no_account``, ...)."""
    EMAIL_SENT = "email.sent"
    EMAIL_DELIVERY_FAILED = "email.delivery_failed"
    """A mail given up: a permanent refusal, or ``TOKENWARD_EMAIL_MAX_ATTEMPTS`` used."""
    USER_INVITED = "user.invited"
    """An admin client created the user without a password and mailed an invitation link."""
    ROLE_CREATED = "role.created"
    ROLE_UPDATED = "role.updated"
    """A role's permissions replaced (``detail.permissions``)."""
    ROLE_DELETED = "role.deleted"
    ROLE_GRANTED = "role.granted"
    """``detail.role``; ``detail.sessions_ended`` when the operator asked for it."""
    ROLE_REVOKED = "role.revoked"
    APP_METADATA_CHANGED = "user.app_metadata_changed"
    USER_METADATA_CHANGED = "user.user_metadata_changed"
    CLAIMS_HOOK_FAILED = "claims.hook_failed"
    MFA_ENROLLED = "mfa.enrolled"
    MFA_REMOVED = "mfa.removed"
    MFA_REQUIRED = "mfa.required"
    """A password was right; the sign-in waits for the second factor."""
    MFA_VERIFIED = "mfa.verified"
    MFA_FAILED = "mfa.failed"
    MFA_REPLAY_REJECTED = "mfa.replay_rejected"
    """A TOTP code whose time step the factor had accepted already."""
    MFA_RECOVERY_CODE_USED = "mfa.recovery_code_used"
    MFA_RECOVERY_CODES_REGENERATED = "mfa.recovery_codes_regenerated"
    PASSKEY_REGISTERED = "passkey.registered"
    PASSKEY_REMOVED = "passkey.removed"
    PASSKEY_USED = "passkey.used"
    PASSKEY_COUNTER_REGRESSED = "passkey.counter_regressed"
    """A passkey's signature counter did not move forward (``detail.refused`` by policy)."""
    REAUTHENTICATED = "reauthenticated"
    """A signed-in user proved who they are again (POST /auth/reauthenticate)."""
    """No token issued: ``detail.reason`` (``raised``, ``timed_out``, ``too_large``, ...),
    ``detail.grant`` (``login`` or ``refresh``)."""


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who is asking, as far as the transport can tell. Never holds a secret."""

    ip: str | None = None
    user_agent: str | None = None

    def __post_init__(self) -> None:
        if self.user_agent is not None:
            # PostgreSQL text cannot hold NUL: the one character no column may keep.
            user_agent = self.user_agent[:512].replace("\x00", "\ufffd")
            object.__setattr__(self, "user_agent", user_agent)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A security event to record along with a change, in the same transaction."""

    kind: EventType
    at: datetime
    client: ClientInfo = field(default_factory=ClientInfo)
    """Who caused it; an empty one for operators and the server itself."""
    user_id: str | None = None
    session_id: str | None = None
    detail: dict[str, Any] | None = None
    """Never a secret."""


class ActorKind(StrEnum):
    """Who acted on a user besides the user (``detail.by`` of their events)."""

    OPERATOR = "operator"
    """The CLI, on the server's machine."""
    ADMIN_API = "admin_api"
    """A back office, through the admin API with its client credentials."""


@dataclass(frozen=True, slots=True)
class Actor:
    """An operator or an admin client, and where its request came from."""

    kind: ActorKind
    client_id: str | None = None
    client: ClientInfo = field(default_factory=ClientInfo)

    def detail(self, **more: Any) -> dict[str, Any]:
        """An event's ``detail``: ``by``, the admin client's id, and ``more``."""
        said: dict[str, Any] = {"by": self.kind.value}
        if self.client_id is not None:
            said["client_id"] = self.client_id
        return {**said, **more}


OPERATOR = Actor(ActorKind.OPERATOR)


class LoginResult(StrEnum):
    """How a sign-in step ended (a metric's label)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MFA_REQUIRED = "mfa_required"
    """The password was right; a second factor is asked for (a step of its own follows)."""


class LoginMethod(StrEnum):
    """Which sign-in step (a metric's label)."""

    PASSWORD = "password"  # noqa: S105 - a method's name, not a password
    MFA = "mfa"
    """The second step of a sign-in: a TOTP code, a recovery code or a passkey."""
    PASSKEY = "passkey"
    """A passkey alone (passwordless)."""


_SECOND_STEP_REFUSED = frozenset({EventType.MFA_FAILED, EventType.MFA_REPLAY_REJECTED})

LOGIN_OUTCOMES = frozenset(
    {
        (LoginResult.SUCCEEDED, LoginMethod.PASSWORD),
        (LoginResult.SUCCEEDED, LoginMethod.MFA),
        (LoginResult.SUCCEEDED, LoginMethod.PASSKEY),
        (LoginResult.FAILED, LoginMethod.PASSWORD),
        (LoginResult.FAILED, LoginMethod.MFA),
        (LoginResult.MFA_REQUIRED, LoginMethod.PASSWORD),
    }
)
"""Every pair :func:`login_outcome` answers. A refused passwordless passkey records no event
(there may be no user to name): the request metrics count it (``/auth/passkeys/login``, 401)."""


def login_outcome(event: NewEvent) -> tuple[LoginResult, LoginMethod] | None:
    """What a recorded event says of a sign-in step, or None when it is not one.

    A reauthentication's events name their session and are not sign-ins; a sign-in's failure
    never has a session."""
    kind = event.kind
    if kind is EventType.LOGIN_SUCCEEDED:
        amr = (event.detail or {}).get("amr", ())
        if "pwd" not in amr:
            return LoginResult.SUCCEEDED, LoginMethod.PASSKEY
        return LoginResult.SUCCEEDED, LoginMethod.MFA if "mfa" in amr else LoginMethod.PASSWORD
    if event.session_id is not None:
        return None
    if kind is EventType.LOGIN_FAILED:
        return LoginResult.FAILED, LoginMethod.PASSWORD
    if kind is EventType.MFA_REQUIRED:
        return LoginResult.MFA_REQUIRED, LoginMethod.PASSWORD
    if kind in _SECOND_STEP_REFUSED:
        return LoginResult.FAILED, LoginMethod.MFA
    return None
