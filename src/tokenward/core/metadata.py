"""User data beside the account, kept apart as the peers learned to keep it.

``app_metadata``: set by operators and the admin API only; may feed the claims hook.
``user_metadata``: a small JSON profile the user edits (``PATCH /auth/me``); never trusted
for authorization. Both are JSON objects with a size cap on their compact encoding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tokenward.exceptions import InvalidMetadataError

__all__ = [
    "APP_METADATA_MAX_BYTES",
    "USER_METADATA_MAX_BYTES",
    "checked_metadata",
    "merge_patch",
]

APP_METADATA_MAX_BYTES = 8_192
"""Half the request body cap (16 KiB), so that a body past it is the 422 of this cap."""
USER_METADATA_MAX_BYTES = 4_096


def checked_metadata(value: object, *, max_bytes: int, what: str) -> dict[str, Any]:
    """A copy of ``value`` if it is a JSON object of at most ``max_bytes`` (compact UTF-8)."""
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise InvalidMetadataError(f"{what} must be a JSON object")
    try:
        encoded = json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()  # UTF-8: a lone surrogate (which no UTF-8 text holds) fails here
    except (TypeError, ValueError, RecursionError):
        raise InvalidMetadataError(f"{what} must be plain JSON text") from None
    if len(encoded) > max_bytes:
        raise InvalidMetadataError(f"{what} is larger than {max_bytes} bytes")
    copied: dict[str, Any] = json.loads(encoded)
    return copied


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON Merge Patch: members set, ``null`` members removed, objects merged."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = merge_patch({}, value) if isinstance(value, Mapping) else value
    return merged
