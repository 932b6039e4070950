"""Signing keys as the running process sees them: the signer, the published set, reloads."""

from __future__ import annotations

from tokenward.app.context import Context
from tokenward.core.keys import SigningKey
from tokenward.infra import metrics

__all__ = ["SigningKeys"]


class SigningKeys:
    """The keyring of this process, kept in step with the database."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def signing_key(self) -> SigningKey:
        """The key that signs access tokens now."""
        return self.ctx.access.keyring.signer(self.ctx.now())

    def published_keys(self) -> list[dict[str, str]]:
        """The public JWKs verifiers need now or soon (RFC 7517 key set members)."""
        return [
            key.public_jwk
            for key in self.ctx.access.keyring.published(self.ctx.now())
            if key.public_jwk is not None
        ]

    async def reload_keys(self) -> None:
        """Pick up keys rotated or retired by another instance or the CLI."""
        now = self.ctx.now()
        await self.ctx.keys.rotate_if_due(now)
        self.ctx.access.keyring = await self.ctx.keys.ensure_signer(now)
        self.report_signer()

    def report_signer(self) -> None:
        """Tell the metrics when the key that signs now was made (not known of an HS256
        secret, which is not reported)."""
        now = self.ctx.now()
        keyring = self.ctx.access.keyring
        if keyring.has_signer(now) and (made := keyring.signer(now).created_at) is not None:
            metrics.current().signing_key(made)
