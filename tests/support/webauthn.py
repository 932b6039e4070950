"""A software WebAuthn authenticator for the server's tests: it answers creation and request
options as a browser and a platform authenticator would (attestation "none", ES256), so that
the server's ceremonies run end to end without a browser. Chromium's own virtual authenticator
is tests/test_browser_passkeys.py's.

Flags (WebAuthn L3 6.1): UP 0x01, UV 0x04, BE 0x08 (backup eligible: synced), BS 0x10
(backed up), AT 0x40 (attested credential data).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["SoftAuthenticator", "b64url", "unb64url"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class _Credential:
    id: bytes
    key: ec.EllipticCurvePrivateKey
    user_handle: bytes
    sign_count: int = 0


@dataclass
class SoftAuthenticator:
    """One authenticator holding discoverable credentials for ``rp_id``, used from ``origin``."""

    rp_id: str
    origin: str
    user_verified: bool = True
    backup_eligible: bool = False
    counts: bool = True
    """Whether it keeps a signature counter (synced passkeys report 0 always)."""
    credentials: list[_Credential] = field(default_factory=list)

    def _flags(self, *, attested: bool) -> int:
        flags = 0x01 | (0x04 if self.user_verified else 0)
        if self.backup_eligible:
            flags |= 0x08 | 0x10
        return flags | (0x40 if attested else 0)

    def _client_data(self, kind: str, challenge: str) -> bytes:
        data = {"type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": False}
        return json.dumps(data, separators=(",", ":")).encode()

    def create(self, options: dict[str, Any]) -> dict[str, Any]:
        """A RegistrationResponseJSON for creation ``options`` (as the server sent them)."""
        key = ec.generate_private_key(ec.SECP256R1())
        numbers = key.public_key().public_numbers()
        cose = cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )
        credential = _Credential(secrets.token_bytes(16), key, unb64url(options["user"]["id"]))
        self.credentials.append(credential)
        auth_data = (
            hashlib.sha256(self.rp_id.encode()).digest()
            + bytes([self._flags(attested=True)])
            + struct.pack(">I", 0)
            + bytes(16)  # AAGUID: none
            + struct.pack(">H", len(credential.id))
            + credential.id
            + cose
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", options["challenge"])
        return {
            "id": b64url(credential.id),
            "rawId": b64url(credential.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def get(self, options: dict[str, Any], *, which: int = -1) -> dict[str, Any]:
        """An AuthenticationResponseJSON for request ``options`` with credential ``which``."""
        credential = self.credentials[which]
        if self.counts:
            credential.sign_count += 1
        auth_data = (
            hashlib.sha256(self.rp_id.encode()).digest()
            + bytes([self._flags(attested=False)])
            + struct.pack(">I", credential.sign_count if self.counts else 0)
        )
        client_data = self._client_data("webauthn.get", options["challenge"])
        signature = credential.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64url(credential.id),
            "rawId": b64url(credential.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(credential.user_handle),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }
