"""The one error of the admin client: tokenward's problem+json answer, carried as data.

An admin call that tokenward refuses raises :class:`AdminError` with the server's own
vocabulary (``status``, ``problem``, ``title``, ``detail``), so a caller branches on
``error.problem == "not-found"`` rather than on text. Network failures are not answers: they
stay httpx's exceptions (``httpx.TransportError`` and its kind).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from tokenward.exceptions import TokenwardError

__all__ = ["PROBLEM_PREFIX", "AdminError", "error_from_answer", "header"]

PROBLEM_PREFIX = "urn:tokenward:problem:"
# RFC 9457's members, and tokenward's request id (on every problem: not the error's data).
_STANDARD_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "request_id"})
_JSON_TYPES = frozenset({"application/problem+json", "application/json"})


class AdminError(TokenwardError):
    """tokenward answered an admin call with something other than 2xx (or with a 2xx whose
    body breaks the contract: ``problem == "invalid-response"``).

    ``problem`` is the stable code (``not-found``, ``insufficient-scope``, ...; the part after
    ``urn:tokenward:problem:``), or ``"http-error"`` when the answer is not tokenward's
    problem+json (a proxy's 502 page, say). ``retry_after`` comes from ``Retry-After`` (429 and
    503). Further members, such as the ``scope`` an ``insufficient-scope`` answer names, are in
    :meth:`extra`. The message holds the method, the path and the server's words: never the
    request body (it may hold a password) nor the client's credentials.
    """

    def __init__(
        self,
        status: int,
        problem: str,
        title: str,
        detail: str | None = None,
        *,
        retry_after: int | None = None,
        extra: Mapping[str, Any] | None = None,
        request: str | None = None,
    ) -> None:
        message = f"{status} {problem}: {title}"
        if detail:
            message += f" ({detail})"
        super().__init__(f"{request} answered {message}" if request else message)
        # The root declares these per class (the server's errors are one class per answer);
        # an AdminError is any answer, so it carries them per instance.
        self.status = status  # type: ignore[misc]
        self.problem = problem  # type: ignore[misc]
        self.title = title  # type: ignore[misc]
        self.detail = detail
        self.retry_after = retry_after
        self._extra = dict(extra or {})

    def public_detail(self) -> str | None:
        return self.detail

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def extra(self) -> dict[str, Any]:
        """The answer's members beyond type, title, status and detail (RFC 9457 3.2)."""
        return dict(self._extra)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, whatever the case of its name (``httpx.Headers`` or a plain dict)."""
    name = name.lower()
    return next((value for key, value in headers.items() if key.lower() == name), None)


def _retry_after(value: str | None) -> int | None:
    # Only delta-seconds: tokenward sends nothing else, and an HTTP-date would need a clock.
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _document(headers: Mapping[str, str], content: bytes) -> dict[str, Any]:
    media_type = (header(headers, "content-type") or "").partition(";")[0].strip().lower()
    if media_type not in _JSON_TYPES:
        return {}
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


def error_from_answer(
    status: int, headers: Mapping[str, str], content: bytes, *, request: str | None = None
) -> AdminError:
    """The :class:`AdminError` of a non-2xx answer (RFC 9457 problem details, or not)."""
    body = _document(headers, content)
    kind = body.get("type")
    problem = "http-error"
    if isinstance(kind, str) and kind.startswith(PROBLEM_PREFIX) and kind != PROBLEM_PREFIX:
        problem = kind.removeprefix(PROBLEM_PREFIX)
    title = body.get("title")
    if not isinstance(title, str) or not title:
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "HTTP error"
    detail = body.get("detail")
    return AdminError(
        status,
        problem,
        title,
        detail if isinstance(detail, str) and detail else None,
        retry_after=_retry_after(header(headers, "retry-after")),
        extra={key: value for key, value in body.items() if key not in _STANDARD_MEMBERS},
        request=request,
    )
