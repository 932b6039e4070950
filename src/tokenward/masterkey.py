"""The one server secret, and the keys derived from it.

``TOKENWARD_SECRET_KEY`` (every instance the same), or else 32 random bytes made on first start
in ``<data dir>/keys/secret.key`` (mode 0600). From it, with HKDF-SHA256 and distinct labels:
the refresh-token MAC key, and the key that encrypts signing keys at rest (Fernet).
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tokenward.config import Settings

__all__ = ["MasterKey"]


def _write_private(path: Path, data: bytes) -> bytes:
    """Create ``path`` with mode 0600 unless another process won the race; return what is there."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return data


class MasterKey:
    """Derives purpose-bound keys; the master secret itself is never used directly."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the master secret must be at least 32 bytes")
        self._secret = secret

    @classmethod
    def load(cls, settings: Settings) -> MasterKey:
        if settings.secret_key is not None:
            return cls(settings.secret_key.get_secret_value().encode())
        path = settings.data_dir / "keys" / "secret.key"
        if path.exists():
            return cls(path.read_bytes())
        return cls(_write_private(path, secrets.token_bytes(32)))

    def derive(self, label: str, length: int = 32) -> bytes:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label.encode())
        return hkdf.derive(self._secret)

    def refresh_mac_key(self) -> bytes:
        return self.derive("tokenward refresh-token mac v1")

    def key_encryption(self) -> Fernet:
        return Fernet(base64.urlsafe_b64encode(self.derive("tokenward signing-key encryption v1")))
