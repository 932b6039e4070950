"""Signing keys at rest: one table, private keys encrypted under the server secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography.fernet import InvalidToken
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tokenward.core.keys import Keyring, SigningKey, generate_private_pem, hs256_key, load_key
from tokenward.core.tokens import LEEWAY_SECONDS
from tokenward.exceptions import ConfigError
from tokenward.infra.config import Settings, SigningAlg
from tokenward.infra.masterkey import MasterKey
from tokenward.storage.db import Database
from tokenward.storage.models import SigningKeyRow

__all__ = ["KeyStore"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class KeyStore:
    """Reads the keyring, makes keys, retires them. Every instance reads the same table."""

    def __init__(self, db: Database, master: MasterKey, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._fernet = master.key_encryption()

    @property
    def token_lifetime(self) -> timedelta:
        return self.settings.access_ttl + timedelta(seconds=LEEWAY_SECONDS)

    def _decode(self, row: SigningKeyRow) -> SigningKey:
        try:
            pem = self._fernet.decrypt(row.private_key.encode())
        except InvalidToken:
            raise ConfigError(
                "TOKENWARD_SECRET_KEY: the signing keys in the database were encrypted under a "
                "different secret; every instance needs the same one"
            ) from None
        alg: SigningAlg = row.alg  # type: ignore[assignment]
        return load_key(
            alg,
            pem,
            activates_at=row.activates_at,
            retired_at=row.retired_at,
            created_at=row.created_at,
        )

    async def keyring(self) -> Keyring:
        settings = self.settings
        if settings.signing_alg == "HS256":
            assert settings.hs256_secret is not None  # noqa: S101 - enforced by Settings
            secret = settings.hs256_secret.get_secret_value().encode()
            return Keyring([hs256_key(secret)], alg="HS256", token_lifetime=self.token_lifetime)
        async with self.db.read() as db:
            rows = (await db.execute(select(SigningKeyRow))).scalars().all()
        return Keyring(
            [self._decode(row) for row in rows],
            alg=settings.signing_alg,
            token_lifetime=self.token_lifetime,
        )

    def _new_row(self, now: datetime, activates_at: datetime) -> tuple[SigningKeyRow, SigningKey]:
        # Whole seconds: tokens carry whole-second iat, and a key must be active at its own iat.
        # A key due now rounds down (active at once); a key due later rounds up, so that the
        # wait which publishes it ahead is never shortened.
        if activates_at.microsecond and activates_at > now:
            activates_at = activates_at.replace(microsecond=0) + timedelta(seconds=1)
        activates_at = activates_at.replace(microsecond=0)
        pem = generate_private_pem(self.settings.signing_alg)
        key = load_key(self.settings.signing_alg, pem, activates_at=activates_at, created_at=now)
        row = SigningKeyRow(
            kid=key.kid,
            alg=key.alg,
            private_key=self._fernet.encrypt(pem).decode(),
            created_at=now,
            activates_at=activates_at,
        )
        return row, key

    async def create(self, now: datetime, *, activates_at: datetime) -> SigningKey:
        row, key = self._new_row(now, activates_at)
        async with self.db.write() as db:
            db.add(row)
        return key

    async def ensure_signer(self, now: datetime) -> Keyring:
        """First start (or a new algorithm): make a key that signs at once."""
        keyring = await self.keyring()
        if keyring.has_signer(now) or self.settings.signing_alg == "HS256":
            return keyring
        async with self.db.write(lock="signing-keys") as db:
            # Checked again under the lock: instances starting together make one key.
            rows = (await db.execute(select(SigningKeyRow))).scalars().all()
            current = Keyring(
                [self._decode(row) for row in rows],
                alg=self.settings.signing_alg,
                token_lifetime=self.token_lifetime,
            )
            if not current.has_signer(now):
                # The very first key has always been active (tokens may carry any past iat);
                # a key made for a new algorithm starts now, so the old keys' tokens live on.
                db.add(self._new_row(now, now if rows else _EPOCH)[0])
        return await self.keyring()

    async def rotate(self, now: datetime, *, immediately: bool = False) -> SigningKey:
        """A new key, published now and signing once every cached JWKS has it.

        The wait covers the instances' key reload (when they start publishing it) plus the
        JWKS cache lifetime (when every verifier's cached copy holds it).
        """
        return await self.create(now, activates_at=now + self._rotation_delay(immediately))

    def _rotation_delay(self, immediately: bool) -> timedelta:
        settings = self.settings
        if immediately:
            return timedelta(0)
        return settings.jwks_max_age + settings.key_reload_interval

    async def retire(self, kid: str, now: datetime) -> bool:
        """Withdraw a key at once (its tokens stop verifying); False if unknown or retired."""
        async with self.db.write() as db:
            row = await db.get(SigningKeyRow, kid, with_for_update=True)
            if row is None or row.retired_at is not None:
                return False
            row.retired_at = now
        return True

    async def due_for_rotation(self, now: datetime) -> bool:
        if not self._rotates:
            return False
        async with self.db.read() as db:
            return await self._due(db, now)

    async def rotate_if_due(self, now: datetime) -> SigningKey | None:
        """The scheduled rotation; of instances that find it due together, one rotates."""
        if not self._rotates or not await self.due_for_rotation(now):
            return None
        async with self.db.write(lock="signing-keys") as db:
            if not await self._due(db, now):
                return None  # another instance rotated first
            row, key = self._new_row(now, now + self._rotation_delay(immediately=False))
            db.add(row)
        return key

    @property
    def _rotates(self) -> bool:
        return self.settings.key_rotation is not None and self.settings.signing_alg != "HS256"

    async def _due(self, db: AsyncSession, now: datetime) -> bool:
        every = self.settings.key_rotation
        assert every is not None  # noqa: S101 - checked by _rotates
        # By creation time: the very first key is active since the epoch, but is not that old.
        newest = (
            await db.execute(
                select(func.max(SigningKeyRow.created_at)).where(
                    SigningKeyRow.alg == self.settings.signing_alg,
                    SigningKeyRow.retired_at.is_(None),
                )
            )
        ).scalar_one_or_none()
        return newest is None or newest + every <= now
