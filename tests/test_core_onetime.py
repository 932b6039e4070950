"""core.onetime: the mailed links' tokens (pure: no database, no clock)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tokenward.core.onetime import LinkPurpose, LinkToken, hash_link_token, parse_link_token

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
BODY = "A" * 43


def issue(purpose: LinkPurpose = LinkPurpose.VERIFY_EMAIL, ttl: float = 3600) -> tuple[str, Any]:
    issued = LinkToken.issue(
        id="link-1",
        user_id="user-1",
        purpose=purpose,
        email="ada@example.com",
        now=NOW,
        ttl=timedelta(seconds=ttl),
    )
    return issued.token, issued.record


@pytest.mark.parametrize(
    ("purpose", "value", "prefix"),
    [
        (LinkPurpose.VERIFY_EMAIL, "verify_email", "twv_"),
        (LinkPurpose.RESET_PASSWORD, "reset_password", "twp_"),
        (LinkPurpose.CHANGE_EMAIL, "change_email", "twe_"),
        (LinkPurpose.CANCEL_EMAIL_CHANGE, "cancel_email_change", "twx_"),
    ],
)
def test_each_purpose_has_its_stored_value_and_its_prefix(
    purpose: LinkPurpose, value: str, prefix: str
) -> None:
    assert purpose.value == value  # stored in link_tokens.purpose: never renamed
    assert purpose.prefix == prefix
    token, record = issue(purpose)
    assert token.startswith(prefix)
    assert record.purpose is purpose


def test_the_prefixes_are_distinct() -> None:
    assert len({p.prefix for p in LinkPurpose}) == len(LinkPurpose) == 4


@pytest.mark.parametrize("purpose", list(LinkPurpose))
def test_an_issued_token_is_256_random_bits_and_only_its_hash_is_kept(
    purpose: LinkPurpose,
) -> None:
    token, record = issue(purpose)
    body = token[len(purpose.prefix) :]
    assert len(body) == 43
    assert len(base64.urlsafe_b64decode(body + "=")) == 32
    assert record.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert record.token_hash == hash_link_token(token)
    assert token not in repr(record)
    assert body not in repr(record)
    assert parse_link_token(token, purpose) == token


def test_tokens_do_not_repeat() -> None:
    tokens = {issue()[0] for _ in range(2000)}
    assert len(tokens) == 2000


def test_an_issued_record_carries_its_binding_and_lifetime() -> None:
    _, record = issue(LinkPurpose.RESET_PASSWORD, ttl=3600)
    assert (record.id, record.user_id, record.email) == ("link-1", "user-1", "ada@example.com")
    assert record.created_at == NOW
    assert record.expires_at == NOW + timedelta(hours=1)
    assert record.used_at is None


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("twv_abc", "1fb819b5f923d8c9c2ea27abeb54cdc170d8ce82e0f7f4341540717580484d3a"),
        ("twp_" + BODY, "2c95cc09a1c7640c944067282c8f528a4996bdd5691041ec2df93ce60a530c32"),
    ],
)
def test_the_hash_is_hex_sha256_of_the_whole_token(token: str, expected: str) -> None:
    assert hash_link_token(token) == expected


def test_the_prefix_is_part_of_the_hash() -> None:
    """One body under two purposes gives two hashes."""
    assert hash_link_token("twv_" + BODY) != hash_link_token("twp_" + BODY)


@pytest.mark.parametrize(
    ("text", "purpose", "accepted"),
    [
        ("twv_" + BODY, LinkPurpose.VERIFY_EMAIL, True),
        ("twp_" + BODY, LinkPurpose.RESET_PASSWORD, True),
        ("twe_" + BODY, LinkPurpose.CHANGE_EMAIL, True),
        ("twx_" + BODY, LinkPurpose.CANCEL_EMAIL_CHANGE, True),
        ("twv_" + "aZ09-_" * 7 + "x", LinkPurpose.VERIFY_EMAIL, True),
        # another purpose's token
        ("twp_" + BODY, LinkPurpose.VERIFY_EMAIL, False),
        ("twv_" + BODY, LinkPurpose.RESET_PASSWORD, False),
        ("twe_" + BODY, LinkPurpose.CANCEL_EMAIL_CHANGE, False),
        ("twx_" + BODY, LinkPurpose.CHANGE_EMAIL, False),
        # the prefix exactly: case, missing, doubled
        ("TWV_" + BODY, LinkPurpose.VERIFY_EMAIL, False),
        (BODY + "AAAA", LinkPurpose.VERIFY_EMAIL, False),
        (" twv_" + BODY, LinkPurpose.VERIFY_EMAIL, False),
        # the length of the body
        ("twv_", LinkPurpose.VERIFY_EMAIL, False),
        ("twv_" + BODY[:-1], LinkPurpose.VERIFY_EMAIL, False),
        ("twv_" + BODY + "A", LinkPurpose.VERIFY_EMAIL, False),
        ("twv_" + "A" * 200, LinkPurpose.VERIFY_EMAIL, False),
        # the alphabet: base64url only
        ("twv_" + BODY[:-1] + "=", LinkPurpose.VERIFY_EMAIL, False),
        ("twv_" + BODY[:-1] + "+", LinkPurpose.VERIFY_EMAIL, False),
        ("twv_" + BODY[:-1] + "/", LinkPurpose.VERIFY_EMAIL, False),
        ("twv_" + BODY[:-1] + " ", LinkPurpose.VERIFY_EMAIL, False),
        ("twv_" + BODY[:-1] + "\n", LinkPurpose.VERIFY_EMAIL, False),
        ("twv_" + BODY[:-1] + "\x00", LinkPurpose.VERIFY_EMAIL, False),
        # ASCII only: str.isalnum() would also take these letters and digits
        ("twv_" + BODY[:-1] + "\u00e9", LinkPurpose.VERIFY_EMAIL, False),  # e acute
        ("twv_" + "\u0663" * 43, LinkPurpose.VERIFY_EMAIL, False),  # Arabic-Indic digit three
        ("twv_" + "\uff21" * 43, LinkPurpose.VERIFY_EMAIL, False),  # fullwidth A
        # not a string at all
        (None, LinkPurpose.VERIFY_EMAIL, False),
        (42, LinkPurpose.VERIFY_EMAIL, False),
        (b"twv_" + BODY.encode(), LinkPurpose.VERIFY_EMAIL, False),
        (["twv_" + BODY], LinkPurpose.VERIFY_EMAIL, False),
        ({"token": "twv_" + BODY}, LinkPurpose.VERIFY_EMAIL, False),
    ],
)
def test_parse_accepts_only_a_well_formed_token_of_the_purpose(
    text: object, purpose: LinkPurpose, accepted: bool
) -> None:
    assert parse_link_token(text, purpose) == (text if accepted else None)


@pytest.mark.parametrize(
    ("used", "seconds_after_issue", "usable"),
    [
        (False, 0, True),
        (False, 3599, True),
        (False, 3600, False),  # at the expiry: no longer
        (False, 3601, False),
        (False, 10**6, False),
        (True, 0, False),
        (True, 3599, False),
    ],
)
def test_usable_means_unused_and_unexpired(
    used: bool, seconds_after_issue: int, usable: bool
) -> None:
    _, record = issue(ttl=3600)
    if used:
        record = record.use(NOW)
    assert record.usable(NOW + timedelta(seconds=seconds_after_issue)) is usable


def test_use_returns_a_used_copy_and_leaves_the_original() -> None:
    _, record = issue()
    later = NOW + timedelta(minutes=5)
    used = record.use(later)
    assert used.used_at == later
    assert record.used_at is None
    assert (used.id, used.token_hash, used.expires_at) == (
        record.id,
        record.token_hash,
        record.expires_at,
    )
    with pytest.raises(FrozenInstanceError):
        record.used_at = later  # type: ignore[misc]
