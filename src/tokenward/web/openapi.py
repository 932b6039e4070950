"""The error half of the HTTP contract, as the OpenAPI document states it.

Every error answer is RFC 9457 problem details (``application/problem+json``, schema
``Problem``) except where OAuth fixes another shape (RFC 6749 section 5.2, ``OAuthError``).
The helpers below declare, per operation, each status the code can answer with the problem
types behind it; ``install_openapi`` adds the schemas that only these declarations name.
Declarations only: nothing here runs on a request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from tokenward.exceptions import (
    AuthenticationError,
    EmailNotVerifiedError,
    EmailTakenError,
    InvalidEmailError,
    InvalidMetadataError,
    InvalidMfaCodeError,
    InvalidPasskeyError,
    InvalidRoleError,
    PasswordPolicyError,
    RateLimitedError,
    StepUpRequiredError,
    TokenError,
    TokenwardError,
    UnavailableError,
)
from tokenward.web.problems import PROBLEM_JSON
from tokenward.web.schemas import (
    MfaGrant,
    OAuthError,
    PasswordGrant,
    Problem,
    RefreshTokenGrant,
)
from tokenward.web.security import MAX_BODY_BYTES

__all__ = [
    "BEARER",
    "BODY",
    "CLIENT",
    "CROSS_ORIGIN",
    "EMAIL_TAKEN",
    "GUARDED",
    "LOGIN_REFUSED",
    "RATE_LIMITED",
    "STEP_UP",
    "TOKEN_REQUEST_BODY",
    "UNAVAILABLE",
    "WRONG_PASSWORD",
    "challenge",
    "declare",
    "install_openapi",
    "problem_response",
    "unprocessable",
]

Responses = dict[int | str, dict[str, Any]]

_REF = "#/components/schemas/"
_TYPE = "urn:tokenward:problem:"
_FORM = "application/x-www-form-urlencoded"

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


_UNPROCESSABLE = {
    "invalid-request": "the request does not match the schema (or a body nests too deeply, or "
    "is not UTF-8)",
    InvalidEmailError.problem: "the email is not a valid address",
    PasswordPolicyError.problem: "the password breaks the policy, `rule` says how (logging in, "
    "only the 128-character cap applies)",
    InvalidMetadataError.problem: "the metadata is not a JSON object, or is over its size cap",
    InvalidRoleError.problem: "a role name or a permission breaks the syntax",
    InvalidMfaCodeError.problem: "the code is not the new factor's current code",
    InvalidPasskeyError.problem: "the registration ceremony did not verify, or the name is "
    "not 1 to 64 printable characters",
}
# The headers an error's class adds to its answer, as the document states them.
_ERROR_HEADERS: dict[type[TokenwardError], dict[str, Any]] = {
    RateLimitedError: _RETRY_AFTER,
    UnavailableError: _RETRY_AFTER,
}


def challenge(scheme: str) -> dict[str, Any]:
    """The required ``WWW-Authenticate`` of a 401: ``Bearer`` or ``Basic``, realm tokenward."""
    return {
        "WWW-Authenticate": {
            "description": f'`{scheme} realm="tokenward"`, the RFC 6750 / RFC 7617 challenge.',
            "required": True,
            "schema": {"type": "string", "pattern": f"^{scheme} "},
        }
    }


def problem_response(
    status: int, description: str, *codes: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A problem+json answer: its status member, and the problem types it can carry."""
    properties: dict[str, Any] = {"status": {"const": status}}
    if codes:
        properties["type"] = {"enum": [_TYPE + code for code in codes]}
    schema = {"allOf": [{"$ref": _REF + "Problem"}, {"properties": properties}]}
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def declare(
    error: type[TokenwardError], description: str, *, headers: dict[str, Any] | None = None
) -> Responses:
    """The answer an error class gives (its status and problem type, from the class itself)."""
    found = headers or next(
        (known for kind, known in _ERROR_HEADERS.items() if issubclass(error, kind)), None
    )
    return {error.status: problem_response(error.status, description, error.problem, headers=found)}


def unprocessable(*codes: str) -> Responses:
    """422: the schema (invalid-request) and, per operation, the rules it cannot express."""
    codes = ("invalid-request", *codes)
    description = "; ".join(f"{code}: {_UNPROCESSABLE[code]}" for code in codes)
    return {422: problem_response(422, description + ".", *codes)}


UNAVAILABLE = declare(
    UnavailableError,
    "The database (or Redis) is out of reach; nothing changed. Retry after Retry-After.",
)
RATE_LIMITED = declare(RateLimitedError, "A rate limit is used up. Retry after Retry-After.")
GUARDED: Responses = {
    # The transport guard's answers, for every method that may carry a body.
    408: problem_response(
        408, "The request body did not arrive in time (the connection closes).", "request-timeout"
    ),
    413: problem_response(
        413, f"The request body is over {MAX_BODY_BYTES} bytes.", "payload-too-large"
    ),
    **unprocessable(),
}
BODY: Responses = {
    **GUARDED,
    400: problem_response(400, "The request body could not be parsed.", "http-error"),
}
BEARER = declare(
    TokenError,
    "No access token, or one that is invalid, expired or of an ended session.",
    headers=challenge("Bearer"),
)
STEP_UP: Responses = {
    401: problem_response(
        401,
        "No valid access token (invalid-token), or one whose authentication is too old or too "
        "weak for this operation (insufficient-user-authentication, RFC 9470: the challenge "
        "names `acr_values` and/or `max_age`; POST /auth/reauthenticate, then retry).",
        TokenError.problem,
        StepUpRequiredError.problem,
        headers=challenge("Bearer"),
    )
}
WRONG_PASSWORD = declare(AuthenticationError, "Wrong email or password.")
EMAIL_TAKEN = declare(EmailTakenError, "An account with this email already exists.")
CROSS_ORIGIN: Responses = {
    403: problem_response(
        403,
        "Cross-origin request refused (the cookie endpoints' CSRF check).",
        "cross-origin-request",
    )
}
LOGIN_REFUSED: Responses = {
    403: problem_response(
        403,
        "Cross-origin request refused (the cookie endpoints' CSRF check), or the password was "
        "right but the address is not verified yet (TOKENWARD_EMAIL_VERIFICATION=required).",
        "cross-origin-request",
        EmailNotVerifiedError.problem,
    )
}
CLIENT: Responses = {
    401: {
        "description": "invalid_client: missing or wrong client credentials (RFC 6749 5.2).",
        "model": OAuthError,
        "headers": challenge("Basic"),
    }
}
TOKEN_REQUEST_BODY: dict[str, Any] = {
    # The form fields are read one by one; the grants are what the endpoint really takes.
    "requestBody": {
        "required": True,
        "content": {_FORM: {"schema": {"$ref": _REF + "TokenRequest"}}},
    }
}


def _schemas(*models: type[BaseModel]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=_REF + "{model}", mode="serialization")
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


def _shared_schemas() -> dict[str, Any]:
    schemas = _schemas(Problem, PasswordGrant, RefreshTokenGrant, MfaGrant)
    schemas["TokenRequest"] = {
        "oneOf": [
            {"$ref": _REF + "PasswordGrant"},
            {"$ref": _REF + "RefreshTokenGrant"},
            {"$ref": _REF + "MfaGrant"},
        ],
        "discriminator": {
            "propertyName": "grant_type",
            "mapping": {
                "password": _REF + "PasswordGrant",
                "refresh_token": _REF + "RefreshTokenGrant",
                "urn:tokenward:params:oauth:grant-type:mfa": _REF + "MfaGrant",
            },
        },
    }
    return schemas


def _drop_unreferenced(document: dict[str, Any]) -> None:
    """Remove the component schemas nothing names (the form body the grants replace)."""
    schemas: dict[str, Any] = document["components"]["schemas"]

    def named_in(value: Any) -> list[str]:
        text = json.dumps(value)
        return [name for name in schemas if f'"{_REF}{name}"' in text]

    pending = named_in({key: value for key, value in document.items() if key != "components"})
    used: set[str] = set()
    while pending:
        name = pending.pop()
        if name not in used:
            used.add(name)
            pending.extend(named_in(schemas[name]))
    for name in set(schemas) - used:
        del schemas[name]


def install_openapi(app: FastAPI) -> None:
    """Complete the generated document with the schemas only these declarations name."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            document.setdefault("components", {}).setdefault("schemas", {}).update(
                _shared_schemas()
            )
            _drop_unreferenced(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
