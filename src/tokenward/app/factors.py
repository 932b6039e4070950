"""Which second factors a user holds: what a sign-in offers, and whether one is needed.

TOTP factors (with their recovery codes) count unless ``TOKENWARD_MFA=off``; passkeys unless
``TOKENWARD_PASSKEYS=off`` too. Read in whatever unit of work the caller holds, so that a
decision and what it decides on are one transaction.
"""

from __future__ import annotations

from tokenward.core.mfa import MfaMethod, MfaMode
from tokenward.core.passkeys import PasskeyMode
from tokenward.infra.config import Settings
from tokenward.storage.port import UnitOfWork

__all__ = ["second_factor_methods"]


async def second_factor_methods(
    tx: UnitOfWork, user_id: str, settings: Settings
) -> tuple[MfaMethod, ...]:
    """The methods a pending sign-in of this user may complete with; () for none."""
    if settings.mfa is MfaMode.OFF:
        return ()
    methods: list[MfaMethod] = []
    if any(f.confirmed for f in await tx.factors(user_id)):
        methods += [MfaMethod.TOTP, MfaMethod.RECOVERY_CODE]
    if settings.passkeys is not PasskeyMode.OFF and await tx.passkeys(user_id):
        methods.append(MfaMethod.WEBAUTHN)
    return tuple(methods)
