"""Passkeys: registering and managing them, and signing in with one, as a second factor after
a password or alone (``TOKENWARD_PASSKEYS``).

The WebAuthn verification (client data, origin, RP id hash, flags, attestation, COSE keys and
signatures) is py_webauthn's; this module adds what it leaves to the relying party: challenges
that are random, stored hashed and single use; the exact origins and RP id from the settings
(never a request's Host); the sign counter policy; and who may register what.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from tokenward.app.context import Context
from tokenward.app.mfa import Reauthenticated, Refused, SecondFactors
from tokenward.app.sessions import IssuedTokens, Principal, Sessions
from tokenward.core.events import ClientInfo, EventType, NewEvent
from tokenward.core.mfa import Amr, Authentication, MfaMethod
from tokenward.core.passkeys import (
    CounterRegression,
    Passkey,
    PasskeyMode,
    WebauthnChallenge,
    WebauthnPurpose,
    check_passkey_name,
    counter_regressed,
    hash_challenge,
    new_user_handle,
)
from tokenward.core.users import Account
from tokenward.exceptions import (
    FactorLimitError,
    InvalidPasskeyError,
    MfaFailedError,
    PasskeyFailedError,
    UnknownFactorError,
)
from tokenward.storage.port import UnitOfWork, retrying

__all__ = ["LoginOptions", "Passkeys"]

MAX_CREDENTIAL_BYTES = 16_384
"""A credential's JSON larger than this is no passkey of ours (the body cap is 16 KiB)."""


@dataclass(frozen=True, slots=True)
class LoginOptions:
    """A passwordless sign-in's options, and the id the answer must name."""

    flow_id: str
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Asserted:
    """An assertion verified against one of the user's passkeys, not yet recorded."""

    passkey: Passkey
    sign_count: int
    backed_up: bool
    regressed: bool


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _challenge_of(credential: dict[str, Any]) -> bytes:
    """The challenge the client data says it answers (verified again by py_webauthn); only
    to find which stored challenge to check against. ValueError for anything malformed."""
    try:
        client_data = json.loads(_b64url_decode(str(credential["response"]["clientDataJSON"])))
        return _b64url_decode(str(client_data["challenge"]))
    except (KeyError, TypeError, ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise ValueError("no challenge in the client data") from error


def _options(options: Any) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(options_to_json(options))
    return parsed


def _transports(passkey: Passkey) -> list[AuthenticatorTransport] | None:
    known = {t.value for t in AuthenticatorTransport}
    found = [AuthenticatorTransport(t) for t in passkey.transports if t in known]
    return found or None


class Passkeys:
    """Register, list, rename and remove passkeys; sign in with one."""

    def __init__(self, ctx: Context, sessions: Sessions, second_factors: SecondFactors) -> None:
        self.ctx = ctx
        self.sessions = sessions
        self.mfa = second_factors

    @property
    def enabled(self) -> bool:
        return self.ctx.settings.passkeys is not PasskeyMode.OFF

    @property
    def _rp_id(self) -> str:
        rp_id = self.ctx.settings.webauthn_rp_id
        assert rp_id is not None  # noqa: S101 - the settings require it when passkeys are on
        return rp_id

    @property
    def _origins(self) -> list[str]:
        return list(self.ctx.settings.webauthn_allowed_origins)

    # -- registering -----------------------------------------------------------------------

    async def registration_options(self, principal: Principal) -> dict[str, Any]:
        """Creation options for a new passkey of the signed-in user (recently authenticated;
        at aal2 when they hold any second factor): a discoverable credential preferred, user
        verification required, their passkeys excluded."""
        held = await self.mfa.held(principal.user.id)
        self.mfa.require_recent(principal, aal2=bool(held))
        now = self.ctx.now()
        async with self.ctx.store.read() as tx:
            existing = await tx.passkeys(principal.user.id)
            handle = await tx.passkey_handle(principal.user.id)
        if len(existing) >= self.ctx.settings.passkeys_max_per_user:
            raise FactorLimitError("too many passkeys")
        challenge, record = WebauthnChallenge.issue(
            WebauthnPurpose.REGISTER,
            now,
            self.ctx.settings.webauthn_challenge_ttl,
            user_id=principal.user.id,
        )
        new_handle = handle or new_user_handle()

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                if handle is None:
                    await tx.set_passkey_handle(principal.user.id, new_handle)
                await tx.add_webauthn_challenge(record)

        await retrying(write)
        async with self.ctx.store.read() as tx:
            stored_handle = await tx.passkey_handle(principal.user.id) or new_handle
        options = generate_registration_options(
            rp_id=self._rp_id,
            rp_name=self.ctx.settings.webauthn_rp_name,
            user_id=_b64url_decode(stored_handle),
            user_name=principal.user.email,
            user_display_name=principal.user.email,
            challenge=challenge,
            timeout=int(self.ctx.settings.webauthn_challenge_ttl.total_seconds() * 1000),
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[
                PublicKeyCredentialDescriptor(
                    id=_b64url_decode(p.credential_id), transports=_transports(p)
                )
                for p in existing
            ],
        )
        return _options(options)

    async def register(
        self, principal: Principal, credential: dict[str, Any], name: str, client: ClientInfo
    ) -> Passkey:
        """Verify the registration ceremony against its challenge (single use, this user's)
        and keep the passkey. InvalidPasskeyError for anything that does not verify."""
        try:
            name = check_passkey_name(name)
            challenge = _challenge_of(credential)
        except ValueError as error:
            raise InvalidPasskeyError(str(error)) from None
        now = self.ctx.now()
        used = await self._use_challenge(challenge, now)
        if (
            used is None
            or used.purpose is not WebauthnPurpose.REGISTER
            or used.user_id != principal.user.id
        ):
            raise InvalidPasskeyError("unknown, used or expired challenge")
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self._rp_id,
                expected_origin=self._origins,
                require_user_verification=True,
            )
        except (WebAuthnException, ValueError, TypeError, KeyError) as error:
            raise InvalidPasskeyError(f"registration did not verify: {error}") from None
        transports = credential.get("response", {}).get("transports") or []
        passkey = Passkey(
            id=str(uuid.uuid4()),
            user_id=principal.user.id,
            credential_id=bytes_to_base64url(verified.credential_id),
            public_key=bytes_to_base64url(verified.credential_public_key),
            sign_count=verified.sign_count,
            name=name,
            created_at=now,
            backup_eligible=verified.credential_device_type.value == "multi_device",
            backed_up=verified.credential_backed_up,
            transports=tuple(str(t) for t in transports if isinstance(t, str))[:8],
            aaguid=str(verified.aaguid)[:36],
        )

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                if len(await tx.passkeys(principal.user.id)) >= (
                    self.ctx.settings.passkeys_max_per_user
                ):
                    raise FactorLimitError("too many passkeys")
                await tx.add_passkey(passkey)
                tx.add_event(
                    NewEvent(
                        EventType.PASSKEY_REGISTERED,
                        now,
                        client,
                        user_id=principal.user.id,
                        session_id=principal.session_id,
                        detail={"passkey_id": passkey.id, "synced": passkey.backup_eligible},
                    )
                )

        await retrying(write)
        return passkey

    # -- managing --------------------------------------------------------------------------

    async def held(self, principal: Principal) -> list[Passkey]:
        async with self.ctx.store.read() as tx:
            return await tx.passkeys(principal.user.id)

    async def rename(self, principal: Principal, passkey_id: str, name: str) -> Passkey:
        try:
            name = check_passkey_name(name)
        except ValueError as error:
            raise InvalidPasskeyError(str(error)) from None

        async def write() -> bool:
            async with self.ctx.store.write() as tx:
                return await tx.rename_passkey(principal.user.id, passkey_id, name)

        if not await retrying(write):
            raise UnknownFactorError("no passkey with this id")
        found = [p for p in await self.held(principal) if p.id == passkey_id]
        if not found:
            raise UnknownFactorError("no passkey with this id")
        return found[0]

    async def remove(self, principal: Principal, passkey_id: str, client: ClientInfo) -> None:
        """Delete a passkey (aal2 and recent, as removing any second factor)."""
        if passkey_id not in {p.id for p in await self.held(principal)}:
            raise UnknownFactorError("no passkey with this id")
        self.mfa.require_recent(principal, aal2=True)
        now = self.ctx.now()

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                if not await tx.delete_passkey(principal.user.id, passkey_id):
                    raise UnknownFactorError("no passkey with this id")
                tx.add_event(
                    NewEvent(
                        EventType.PASSKEY_REMOVED,
                        now,
                        client,
                        user_id=principal.user.id,
                        session_id=principal.session_id,
                        detail={"passkey_id": passkey_id},
                    )
                )

        await retrying(write)

    # -- as a second factor ----------------------------------------------------------------

    async def second_factor_options(self, mfa_token: str) -> dict[str, Any]:
        """Request options for a pending sign-in's passkey: the user's passkeys allowed."""
        challenge_row, account = await self.mfa.pending(mfa_token, enrolling=False)
        async with self.ctx.store.read() as tx:
            held = await tx.passkeys(account.id)
        if not held:
            raise MfaFailedError("no passkey")
        return await self._request_options(
            WebauthnPurpose.SECOND_FACTOR,
            held,
            required=False,
            user_id=account.id,
            mfa_challenge_id=challenge_row.id,
        )

    async def verify_second_factor(
        self, mfa_token: str, credential: dict[str, Any], client: ClientInfo
    ) -> IssuedTokens:
        """Complete a pending sign-in with a passkey: ``amr`` pwd, hwk or swk, mfa."""
        challenge_row, account = await self.mfa.pending(mfa_token, enrolling=False)
        now = self.ctx.now()
        async with self.mfa.counted(account.id):
            await self.mfa.attempt(challenge_row, now)
            try:
                asserted = await self._assert(
                    credential,
                    now,
                    WebauthnPurpose.SECOND_FACTOR,
                    required=False,
                    user_id=account.id,
                    mfa_challenge_id=challenge_row.id,
                )
            except PasskeyFailedError:
                await self.mfa.failed(account.id, client, now, "passkey_refused")
                raise MfaFailedError("passkey refused") from None

            async def admit(
                tx: UnitOfWork, user: Account, client: ClientInfo, at: datetime, session_id: str
            ) -> bool:
                if not await tx.use_mfa_challenge(challenge_row.id, at):
                    raise Refused("challenge_used")
                await self._record(tx, asserted, client, at, session_id)
                tx.add_event(
                    NewEvent(
                        EventType.MFA_VERIFIED,
                        at,
                        client,
                        user_id=user.id,
                        session_id=session_id,
                        detail={"method": "webauthn", "passkey_id": asserted.passkey.id},
                    )
                )
                return True

            authentication = Authentication.with_passkey(
                now, asserted.passkey.amr, after_password=True
            )
            return await self.mfa.sign_in(account, admit, client, now, authentication)

    # -- reauthenticating ------------------------------------------------------------------

    async def reauthentication_options(self, principal: Principal) -> dict[str, Any]:
        """Request options to reauthenticate the signed-in user with one of their passkeys."""
        async with self.ctx.store.read() as tx:
            held = await tx.passkeys(principal.user.id)
        if not held:
            raise UnknownFactorError("no passkey")
        return await self._request_options(
            WebauthnPurpose.REAUTHENTICATE, held, required=False, user_id=principal.user.id
        )

    async def reauthenticate(
        self, principal: Principal, credential: dict[str, Any], client: ClientInfo
    ) -> Reauthenticated:
        """A step-up with a passkey: a fresh ``auth_time`` and ``acr`` aal2 for the session."""
        now = self.ctx.now()
        async with self.mfa.counted(principal.user.id):
            try:
                asserted = await self._assert(
                    credential,
                    now,
                    WebauthnPurpose.REAUTHENTICATE,
                    required=False,
                    user_id=principal.user.id,
                )
            except PasskeyFailedError:
                await self.mfa.failed(
                    principal.user.id, client, now, "passkey_refused", principal.session_id
                )
                raise MfaFailedError("passkey refused") from None

            async def spend(tx: UnitOfWork, account: Account) -> None:
                await self._record(tx, asserted, client, now, principal.session_id)

            def renew(was: Authentication) -> Authentication:
                after_password = Amr.PWD in was.methods
                key = asserted.passkey.amr
                return Authentication.with_passkey(now, key, after_password=after_password)

            return await self.mfa.reauthenticated(
                principal, client, now, MfaMethod.WEBAUTHN.value, renew, spend
            )

    # -- passwordless ----------------------------------------------------------------------

    async def login_options(self) -> LoginOptions:
        """Options for a passwordless sign-in: no credentials listed (the browser offers the
        user's discoverable passkeys; conditional UI works), user verification required."""
        options = await self._request_options(WebauthnPurpose.LOGIN, [], required=True)
        return LoginOptions(flow_id=str(options.pop("flow_id")), options=options)

    async def login(
        self, flow_id: str, credential: dict[str, Any], client: ClientInfo
    ) -> IssuedTokens:
        """Sign in with a passkey alone: a session at aal2 (the passkey verified its user).
        PasskeyFailedError, one answer, for anything else."""
        now = self.ctx.now()
        asserted = await self._assert(
            credential, now, WebauthnPurpose.LOGIN, required=True, flow_id=flow_id
        )
        async with self.ctx.store.read() as tx:
            account = await tx.account(asserted.passkey.user_id)
        if account is None or account.disabled:
            raise PasskeyFailedError("user gone or disabled")

        async def admit(
            tx: UnitOfWork, user: Account, client: ClientInfo, at: datetime, session_id: str
        ) -> bool:
            await self._record(tx, asserted, client, at, session_id)
            return True

        authentication = Authentication.with_passkey(
            now, asserted.passkey.amr, after_password=False
        )
        try:
            tokens = await self.sessions.start(account, client, now, authentication, admit)
        except Refused:
            raise PasskeyFailedError("refused") from None
        if tokens is None:
            raise PasskeyFailedError("user changed")
        return tokens

    # -- the ceremonies --------------------------------------------------------------------

    async def _request_options(
        self,
        purpose: WebauthnPurpose,
        allowed: list[Passkey],
        *,
        required: bool,
        user_id: str | None = None,
        mfa_challenge_id: str | None = None,
    ) -> dict[str, Any]:
        now = self.ctx.now()
        challenge, record = WebauthnChallenge.issue(
            purpose,
            now,
            self.ctx.settings.webauthn_challenge_ttl,
            user_id=user_id,
            mfa_challenge_id=mfa_challenge_id,
        )

        async def write() -> None:
            async with self.ctx.store.write() as tx:
                await tx.add_webauthn_challenge(record)

        await retrying(write)
        options = _options(
            generate_authentication_options(
                rp_id=self._rp_id,
                challenge=challenge,
                timeout=int(self.ctx.settings.webauthn_challenge_ttl.total_seconds() * 1000),
                allow_credentials=[
                    PublicKeyCredentialDescriptor(
                        id=_b64url_decode(p.credential_id), transports=_transports(p)
                    )
                    for p in allowed
                ],
                user_verification=(
                    UserVerificationRequirement.REQUIRED
                    if required
                    else UserVerificationRequirement.PREFERRED
                ),
            )
        )
        if purpose is WebauthnPurpose.LOGIN:
            options["flow_id"] = record.id
        return options

    async def _use_challenge(self, challenge: bytes, now: datetime) -> WebauthnChallenge | None:
        async def write() -> WebauthnChallenge | None:
            async with self.ctx.store.write() as tx:
                return await tx.use_webauthn_challenge(hash_challenge(challenge), now)

        return await retrying(write)

    async def _assert(
        self,
        credential: dict[str, Any],
        now: datetime,
        purpose: WebauthnPurpose,
        *,
        required: bool,
        user_id: str | None = None,
        mfa_challenge_id: str | None = None,
        flow_id: str | None = None,
    ) -> _Asserted:
        """Verify an assertion: its challenge (spent here, whatever follows), one of the right
        user's passkeys, origin and RP id exactly, user verification when ``required``, the
        counter by policy. PasskeyFailedError (reason for logs) for any refusal."""
        try:
            challenge = _challenge_of(credential)
            credential_id = str(credential["rawId"])
        except (ValueError, KeyError, TypeError):
            raise PasskeyFailedError("malformed credential") from None
        if len(json.dumps(credential)) > MAX_CREDENTIAL_BYTES:
            raise PasskeyFailedError("credential too large")
        used = await self._use_challenge(challenge, now)
        if (
            used is None
            or used.purpose is not purpose
            or (flow_id is not None and used.id != flow_id)
            or (mfa_challenge_id is not None and used.mfa_challenge_id != mfa_challenge_id)
        ):
            raise PasskeyFailedError("unknown, used or expired challenge")
        async with self.ctx.store.read() as tx:
            passkey = await tx.passkey_by_credential(credential_id)
        if passkey is None or (user_id is not None and passkey.user_id != user_id):
            raise PasskeyFailedError("unknown credential")
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self._rp_id,
                expected_origin=self._origins,
                credential_public_key=_b64url_decode(passkey.public_key),
                credential_current_sign_count=0,  # the counter is this module's to judge
                require_user_verification=required,
            )
        except (WebAuthnException, ValueError, TypeError, KeyError) as error:
            raise PasskeyFailedError(f"assertion did not verify: {error}") from None
        regressed = counter_regressed(passkey.sign_count, verified.new_sign_count)
        if regressed and self.ctx.settings.webauthn_counter_regression is CounterRegression.REJECT:
            await self._counter_event(passkey, verified.new_sign_count, now, refused=True)
            raise PasskeyFailedError("signature counter went backwards")
        return _Asserted(passkey, verified.new_sign_count, verified.credential_backed_up, regressed)

    async def _counter_event(
        self, passkey: Passkey, presented: int, now: datetime, *, refused: bool
    ) -> None:
        async def write() -> None:
            async with self.ctx.store.write() as tx:
                tx.add_event(self._regression(passkey, presented, now, ClientInfo(), refused))

        await retrying(write)

    @staticmethod
    def _regression(
        passkey: Passkey, presented: int, now: datetime, client: ClientInfo, refused: bool
    ) -> NewEvent:
        return NewEvent(
            EventType.PASSKEY_COUNTER_REGRESSED,
            now,
            client,
            user_id=passkey.user_id,
            detail={
                "passkey_id": passkey.id,
                "stored": passkey.sign_count,
                "presented": presented,
                "refused": refused,
            },
        )

    async def _record(
        self,
        tx: UnitOfWork,
        asserted: _Asserted,
        client: ClientInfo,
        now: datetime,
        session_id: str,
    ) -> None:
        """In the sign-in's transaction: the counter and use recorded, and the events."""
        passkey = asserted.passkey
        count = max(asserted.sign_count, passkey.sign_count)
        await tx.passkey_used(passkey.id, count, asserted.backed_up, now)
        if asserted.regressed:
            tx.add_event(self._regression(passkey, asserted.sign_count, now, client, False))
        tx.add_event(
            NewEvent(
                EventType.PASSKEY_USED,
                now,
                client,
                user_id=passkey.user_id,
                session_id=session_id,
                detail={"passkey_id": passkey.id, "synced": passkey.backup_eligible},
            )
        )
