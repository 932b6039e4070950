"""core.claims.custom_claims and core.metadata as tables: pure functions, no app, no database."""

from __future__ import annotations

import copy
import json
import math
from collections import OrderedDict
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest

from tokenward.core.claims import (
    RESERVED_CLAIMS,
    ClaimsProblem,
    CustomClaimsError,
    custom_claims,
)
from tokenward.core.metadata import (
    APP_METADATA_MAX_BYTES,
    USER_METADATA_MAX_BYTES,
    checked_metadata,
    merge_patch,
)
from tokenward.exceptions import InvalidMetadataError

CAP = 2048

# -- custom_claims --------------------------------------------------------------------------


def test_reserved_claims_are_the_registered_session_and_authorization_ones() -> None:
    """The names tokenward alone sets (RFC 7519, RFC 9068, OpenID Connect), and those a
    resource server reads as who the token is for or acts as (RFC 9068 client_id, OIDC azp,
    RFC 7800 cnf, RFC 8693 act and may_act), are all reserved."""
    assert {
        "client_id",
        "azp",
        "cnf",
        "act",
        "may_act",
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "sid",
        "typ",
        "amr",
        "acr",
        "auth_time",
        "roles",
        "scope",
    } == RESERVED_CLAIMS


@pytest.mark.parametrize(
    ("answer", "extra", "dropped"),
    [
        pytest.param({}, {}, (), id="empty"),
        pytest.param({"tenant": "acme"}, {"tenant": "acme"}, (), id="one claim"),
        pytest.param(
            {"n": 1, "f": 1.5, "t": True, "z": None, "l": [1, "a"], "o": {"k": [{}]}},
            {"n": 1, "f": 1.5, "t": True, "z": None, "l": [1, "a"], "o": {"k": [{}]}},
            (),
            id="every JSON type",
        ),
        pytest.param(
            {"sub": "x", "tenant": "acme", "roles": ["admin"]},
            {"tenant": "acme"},
            ("roles", "sub"),
            id="reserved dropped, sorted",
        ),
        pytest.param(
            {name: "x" for name in RESERVED_CLAIMS},
            {},
            tuple(sorted(RESERVED_CLAIMS)),
            id="only reserved",
        ),
        pytest.param({"Sub": "x", "SCOPE": "y"}, {"Sub": "x", "SCOPE": "y"}, (), id="case counts"),
        pytest.param({"tup": (1, 2)}, {"tup": [1, 2]}, (), id="tuple as list"),
        pytest.param(OrderedDict(a=1), {"a": 1}, (), id="any mapping"),
        pytest.param(MappingProxyType({"a": 1}), {"a": 1}, (), id="read-only mapping"),
        pytest.param({"e": "é✓"}, {"e": "é✓"}, (), id="non-ASCII"),
    ],
)
def test_custom_claims_keeps_the_extra_and_names_the_reserved_it_dropped(
    answer: Any, extra: dict[str, Any], dropped: tuple[str, ...]
) -> None:
    """What the hook may add passes through as plain JSON; reserved names are dropped."""
    assert custom_claims(answer, max_bytes=CAP) == (extra, dropped)


def test_custom_claims_is_a_copy_the_hook_cannot_change_afterwards() -> None:
    """The claims are plain data of their own: a hook mutating its answer later changes no
    token."""
    answer: dict[str, Any] = {"o": {"k": [1]}}
    extra, _ = custom_claims(answer, max_bytes=CAP)
    answer["o"]["k"].append(2)
    assert extra == {"o": {"k": [1]}}


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        pytest.param(None, ClaimsProblem.NOT_A_MAPPING, id="None"),
        pytest.param([("a", 1)], ClaimsProblem.NOT_A_MAPPING, id="list of pairs"),
        pytest.param("{}", ClaimsProblem.NOT_A_MAPPING, id="JSON text"),
        pytest.param(1, ClaimsProblem.NOT_A_MAPPING, id="number"),
        pytest.param({1: "a"}, ClaimsProblem.NOT_A_MAPPING, id="int key"),
        pytest.param({("a",): 1}, ClaimsProblem.NOT_A_MAPPING, id="tuple key"),
        pytest.param({"a": 1, None: 2}, ClaimsProblem.NOT_A_MAPPING, id="one bad key"),
        pytest.param({"a": {1, 2}}, ClaimsProblem.NOT_JSON, id="set"),
        pytest.param({"a": b"x"}, ClaimsProblem.NOT_JSON, id="bytes"),
        pytest.param({"a": datetime(2026, 1, 1, tzinfo=UTC)}, ClaimsProblem.NOT_JSON, id="date"),
        pytest.param({"a": math.nan}, ClaimsProblem.NOT_JSON, id="NaN"),
        pytest.param({"a": -math.inf}, ClaimsProblem.NOT_JSON, id="-Infinity"),
        pytest.param({"a": object()}, ClaimsProblem.NOT_JSON, id="object"),
        pytest.param({"a": "x" * CAP}, ClaimsProblem.TOO_LARGE, id="over the cap"),
    ],
)
def test_custom_claims_refuses_what_cannot_go_in_a_token(
    answer: Any, problem: ClaimsProblem
) -> None:
    """Not an object of string keys, not strict JSON, or too large: refused, with the reason."""
    with pytest.raises(CustomClaimsError) as refused:
        custom_claims(answer, max_bytes=CAP)
    assert refused.value.problem is problem


@pytest.mark.parametrize("cap", [64, 2048, 4096])
def test_the_cap_is_inclusive_and_counts_compact_json(cap: int) -> None:
    """Exactly ``max_bytes`` of compact JSON passes, one byte more does not."""
    filler = cap - len('{"a":""}')
    extra, _ = custom_claims({"a": "x" * filler}, max_bytes=cap)
    assert len(json.dumps(extra, separators=(",", ":"))) == cap
    with pytest.raises(CustomClaimsError) as refused:
        custom_claims({"a": "x" * (filler + 1)}, max_bytes=cap)
    assert refused.value.problem is ClaimsProblem.TOO_LARGE


def test_the_cap_is_measured_after_the_reserved_names_are_dropped() -> None:
    """A hook that also answers a huge reserved claim is not refused for it (it is dropped)."""
    filler = CAP - len('{"a":""}')
    extra, dropped = custom_claims({"a": "x" * filler, "sub": "y" * 10 * CAP}, max_bytes=CAP)
    assert extra == {"a": "x" * filler}
    assert dropped == ("sub",)


def test_the_cap_counts_non_ascii_as_the_token_carries_it() -> None:
    """Tokens carry JSON with non-ASCII characters escaped (six bytes for ``é``): the cap counts
    those bytes, so that it bounds the token."""
    cap = 64
    fits = (cap - len('{"a":""}')) // len("\\u00e9")
    assert custom_claims({"a": "é" * fits}, max_bytes=cap)[0] == {"a": "é" * fits}
    with pytest.raises(CustomClaimsError):
        custom_claims({"a": "é" * (fits + 1)}, max_bytes=cap)


# -- checked_metadata -------------------------------------------------------------------------


def test_the_metadata_caps() -> None:
    """user_metadata 4 KiB, app_metadata 8 KiB."""
    assert (USER_METADATA_MAX_BYTES, APP_METADATA_MAX_BYTES) == (4096, 8192)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({}, id="empty"),
        pytest.param({"theme": "dark", "n": 1, "f": 0.5, "b": False, "z": None}, id="scalars"),
        pytest.param({"deep": {"er": {"est": [1, {"x": []}]}}}, id="nested"),
        pytest.param({"名前": "エイダ"}, id="non-ASCII"),
    ],
)
def test_checked_metadata_accepts_json_objects_and_returns_a_copy(value: dict[str, Any]) -> None:
    """A JSON object within the cap comes back equal, and not the caller's object."""
    original = copy.deepcopy(value)
    checked = checked_metadata(value, max_bytes=USER_METADATA_MAX_BYTES, what="user_metadata")
    assert checked == original
    assert checked is not value
    if "deep" in value:
        checked["deep"]["er"]["est"].append("changed")
        assert value == original


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(None, "must be a JSON object", id="None"),
        pytest.param([], "must be a JSON object", id="list"),
        pytest.param("{}", "must be a JSON object", id="string"),
        pytest.param({1: "a"}, "must be a JSON object", id="int key"),
        pytest.param({"a": {1, 2}}, "must be plain JSON", id="set"),
        pytest.param({"a": math.nan}, "must be plain JSON", id="NaN"),
        pytest.param({"a": math.inf}, "must be plain JSON", id="Infinity"),
        pytest.param({"a": b"x"}, "must be plain JSON", id="bytes"),
        pytest.param({"a": datetime(2026, 1, 1, tzinfo=UTC)}, "must be plain JSON", id="date"),
    ],
)
def test_checked_metadata_refuses_what_is_not_a_json_object(value: Any, message: str) -> None:
    """Anything but a plain JSON object is InvalidMetadataError, naming the field."""
    with pytest.raises(InvalidMetadataError, match=f"user_metadata {message}"):
        checked_metadata(value, max_bytes=USER_METADATA_MAX_BYTES, what="user_metadata")


def test_checked_metadata_refuses_a_self_containing_object() -> None:
    """A cycle is not JSON (a ValueError from the encoder, never a crash)."""
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(InvalidMetadataError):
        checked_metadata(cyclic, max_bytes=USER_METADATA_MAX_BYTES, what="user_metadata")


@pytest.mark.parametrize("cap", [USER_METADATA_MAX_BYTES, APP_METADATA_MAX_BYTES])
def test_the_metadata_cap_is_inclusive_in_utf8_bytes(cap: int) -> None:
    """The cap counts UTF-8 bytes of compact JSON (``é`` is two), exactly the cap passes."""
    filler = cap - len('{"a":""}')
    assert checked_metadata({"a": "x" * filler}, max_bytes=cap, what="m") == {"a": "x" * filler}
    with pytest.raises(InvalidMetadataError, match=f"larger than {cap} bytes"):
        checked_metadata({"a": "x" * (filler + 1)}, max_bytes=cap, what="m")
    assert filler % 2 == 0
    checked_metadata({"a": "é" * (filler // 2)}, max_bytes=cap, what="m")
    with pytest.raises(InvalidMetadataError):
        checked_metadata({"a": "é" * (filler // 2) + "x"}, max_bytes=cap, what="m")


def test_checked_metadata_refuses_a_lone_surrogate_as_invalid_metadata() -> None:
    """A string JSON can carry but UTF-8 cannot (a lone surrogate, which json.loads accepts
    from ``"\\ud800"``) is invalid metadata, not an unexpected error."""
    value = json.loads('{"a": "\\ud800"}')
    with pytest.raises(InvalidMetadataError):
        checked_metadata(value, max_bytes=USER_METADATA_MAX_BYTES, what="user_metadata")


# -- merge_patch: RFC 7396 Appendix A ---------------------------------------------------------

# Every example of the appendix whose target and patch are objects (merge_patch's domain: the
# API patches an object with an object). The one with an array target, [1,2] patched by
# {"a":"b","c":null}, appears as a member below: a non-object member is replaced whole.
RFC_7396_APPENDIX_A = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    # The appendix's whole-document rows, one level down:
    ({"m": ["a", "b"]}, {"m": ["c", "d"]}, {"m": ["c", "d"]}),
    ({"m": {"a": "b"}}, {"m": ["c"]}, {"m": ["c"]}),
    ({"m": {"a": "foo"}}, {"m": "bar"}, {"m": "bar"}),
    ({"m": [1, 2]}, {"m": {"a": "b", "c": None}}, {"m": {"a": "b"}}),
]


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    RFC_7396_APPENDIX_A,
    ids=[json.dumps(patch, separators=(",", ":")) for _, patch, _ in RFC_7396_APPENDIX_A],
)
def test_merge_patch_follows_rfc_7396_appendix_a(
    target: dict[str, Any], patch: dict[str, Any], result: dict[str, Any]
) -> None:
    """Members set, null members removed, objects merged, anything else replaced whole."""
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == result
    assert target == before, "the target was changed in place"


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        pytest.param({"a": 1}, {}, {"a": 1}, id="empty patch"),
        pytest.param({"a": 1}, {"b": None}, {"a": 1}, id="removing what is absent"),
        pytest.param({"a": {"b": 1}}, {"a": None}, {}, id="removing an object"),
        pytest.param({"a": {"b": 1}}, {"a": {}}, {"a": {"b": 1}}, id="empty object merges"),
        pytest.param({"a": 1}, {"a": {}}, {"a": {}}, id="empty object replaces a scalar"),
        pytest.param({}, {"a": [None]}, {"a": [None]}, id="null inside an array stays"),
        pytest.param({"a": 0}, {"a": False}, {"a": False}, id="false is a value"),
        pytest.param(
            {"x": {"y": {"z": 1, "w": 2}}},
            {"x": {"y": {"z": None, "v": {"n": None}}}},
            {"x": {"y": {"w": 2, "v": {}}}},
            id="deep",
        ),
    ],
)
def test_merge_patch_edges(
    target: dict[str, Any], patch: dict[str, Any], result: dict[str, Any]
) -> None:
    """What the appendix implies at the edges: nulls remove at any depth, a new object is
    added without its null members."""
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == result
    assert target == before


def test_merge_patch_shares_nothing_mutable_with_the_patch() -> None:
    """A merged object added from the patch is a copy: changing the patch later does not
    change the result."""
    patch: dict[str, Any] = {"a": {"b": {"c": 1}}}
    merged = merge_patch({}, patch)
    patch["a"]["b"]["c"] = 2
    assert merged == {"a": {"b": {"c": 1}}}
