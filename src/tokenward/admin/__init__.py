"""A client for tokenward's admin HTTP API (``/admin``), in the base install.

    from tokenward.admin import AdminClient, AdminError

    with AdminClient("https://auth.example.com", "ops-bot", secret) as admin:
        user = admin.create_user("ada@example.com", roles=["editor"], send_invitation=True)
        admin.grant_role(user.id, "billing", end_sessions=True)
        for someone in admin.iter_users(email_prefix="ada"):
            print(someone.email, someone.roles, someone.scope)
        try:
            ended = admin.disable_user("u-123")     # the number of sessions it ended
        except AdminError as error:   # .status .problem .title .detail .retry_after
            if error.problem != "not-found":
                raise

:class:`AsyncAdminClient` has the same methods, awaited (``async with``, ``aclose()``,
``async for`` over ``iter_users``).

The client authenticates as an API client (HTTP Basic, RFC 6749 2.3.1); its scopes decide what
it may do: ``admin:users:read``, ``admin:users`` (also reads), ``admin:roles``,
``admin:sessions``. A call outside them raises ``AdminError`` with ``problem ==
"insufficient-scope"`` and the scope needed in ``error.extra()["scope"]``.

Errors
    Every non-2xx answer raises :class:`AdminError` (under ``tokenward.exceptions.
    TokenwardError``) carrying tokenward's problem code: branch on ``error.problem``, never on
    the text. ``retry_after`` is set on ``rate-limited`` (429) and ``unavailable`` (503). A 2xx
    whose body breaks the contract raises it with ``problem == "invalid-response"``. Network
    failures and timeouts are not answers and raise httpx's exceptions (``httpx.HTTPError``);
    the client never retries: a retried write could act twice.
Secrets
    The client secret appears in no repr, str or error message, and no error message holds a
    request body (a new user's password) either. Redirects are not followed.

Each request is described once, as a sans-IO :class:`~tokenward.admin._calls.Call` (method,
path, query, body, and how to read the answer); the two clients only send them. This package
imports only the standard library, httpx and ``tokenward.exceptions``.
"""

from __future__ import annotations

from tokenward.admin._async import AsyncAdminClient
from tokenward.admin._errors import AdminError
from tokenward.admin._models import AdminEvent, AdminSession, AdminUser, Role, UserPage
from tokenward.admin._sync import AdminClient

__all__ = [
    "AdminClient",
    "AdminError",
    "AdminEvent",
    "AdminSession",
    "AdminUser",
    "AsyncAdminClient",
    "Role",
    "UserPage",
]
