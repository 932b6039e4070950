"""The one server secret, and the keys derived from it.

``TOKENWARD_SECRET_KEY`` (every instance the same), or else 32 random bytes made on first start
in ``<data dir>/keys/secret.key`` (mode 0600: a file other users may read or write stops the
start). From it, with HKDF-SHA256 and distinct labels: the refresh-token MAC key, and the key
that encrypts signing keys at rest (Fernet).
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tokenward.exceptions import ConfigError
from tokenward.infra.config import Settings

__all__ = ["MasterKey"]


def _write_private(path: Path, data: bytes) -> bytes:
    """Create ``path`` (mode 0600) with ``data`` unless another process won; return the winner.

    Written to a temporary file and linked into place, so that no process (and no crash) ever
    sees the file half-written.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret-")
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp makes it 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # atomic, and fails if the file is there already
        except FileExistsError:
            return path.read_bytes()
    finally:
        os.unlink(temporary)
    return data


def _check_private(path: Path) -> None:
    """Refuse a secret file that the group or others may read or write: anyone who can read it
    can mint refresh-token MACs and decrypt the signing keys; anyone who can write it, swap it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if os.name == "posix" and mode & 0o077:
        raise ConfigError(
            f"{path}: the server secret file is open to other users (mode {mode:04o}); "
            f"make it private to tokenward's user: chmod 600 {path}"
        )


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
            _check_private(path)
            secret = path.read_bytes()
        else:
            secret = _write_private(path, secrets.token_bytes(32))
        if len(secret) < 32:
            raise ConfigError(
                f"{path}: the server secret file is damaged ({len(secret)} bytes); restore it "
                "from a backup (without it, keys and refresh tokens cannot be read)"
            )
        return cls(secret)

    def derive(self, label: str, length: int = 32) -> bytes:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label.encode())
        return hkdf.derive(self._secret)

    def refresh_mac_key(self) -> bytes:
        return self.derive("tokenward refresh-token mac v1")

    def outbox_key(self) -> bytes:
        """Seals queued mails' recipients and links (``app.outbox``)."""
        return self.derive("tokenward mail outbox v1")

    def mfa_key(self) -> bytes:
        """Seals second factors' secrets (``app.mfa``)."""
        return self.derive("tokenward mfa secrets v1")

    def key_encryption(self) -> Fernet:
        return Fernet(base64.urlsafe_b64encode(self.derive("tokenward signing-key encryption v1")))
