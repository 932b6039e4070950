"""The storage port over SQLAlchemy, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tokenward.core.events import NewEvent
from tokenward.core.mfa import CHALLENGE_ATTEMPTS, Authentication, Factor, FactorType, MfaChallenge
from tokenward.core.onetime import LinkPurpose, LinkToken
from tokenward.core.passkeys import Passkey, WebauthnChallenge, WebauthnPurpose
from tokenward.core.roles import Grants, Role
from tokenward.core.sessions import EndReason, RotationOutcome, Session
from tokenward.core.users import Account
from tokenward.exceptions import EmailTakenError, PasskeyTakenError
from tokenward.infra.observe import committed
from tokenward.storage import queries
from tokenward.storage.db import NO_KEY_UPDATE, Database
from tokenward.storage.errors import RetryableConflict
from tokenward.storage.models import (
    ClientRow,
    EventRow,
    LinkTokenRow,
    MfaChallengeRow,
    MfaFactorRow,
    OutboxRow,
    PasskeyRow,
    RecoveryCodeRow,
    RevocationRow,
    RoleRow,
    SessionRow,
    UserRoleRow,
    UserRow,
    WebauthnChallengeRow,
)
from tokenward.storage.port import (
    ClientRecord,
    EventInfo,
    MailState,
    OutgoingMail,
    QueuedMail,
    RevocationEntry,
    SessionInfo,
    UnitOfWork,
)

__all__ = ["SqlStore", "SqlUnitOfWork"]


def _grants(row: UserRow) -> Grants:
    return Grants.parse(row.held_roles, row.held_permissions)


def _passkey(row: PasskeyRow) -> Passkey:
    return Passkey(
        id=row.id,
        user_id=row.user_id,
        credential_id=row.credential_id,
        public_key=row.public_key,
        sign_count=row.sign_count,
        name=row.name,
        created_at=row.created_at,
        backup_eligible=row.backup_eligible,
        backed_up=row.backed_up,
        transports=tuple(row.transports.split()),
        aaguid=row.aaguid,
        last_used_at=row.last_used_at,
    )


def _account(row: UserRow) -> Account:
    return Account(
        id=row.id,
        email=row.email,
        password_hash=row.password_hash,
        created_at=row.created_at,
        password_changed_at=row.password_changed_at,
        disabled_at=row.disabled_at,
        email_verified_at=row.email_verified_at,
        app_metadata=row.app_metadata or {},
        user_metadata=row.user_metadata or {},
    )


def _client(row: ClientRow) -> ClientRecord:
    return ClientRecord(
        row.id, row.name, row.secret_hash, row.created_at, tuple(row.scopes.split())
    )


def _role(row: RoleRow) -> Role:
    return Role(row.name, tuple(row.permissions.split()), row.created_at)


def _aggregates() -> dict[str, Any]:
    """``user_roles`` aggregated for the user being updated: the values of ``held_roles`` and
    ``held_permissions``, each space-separated (NULL for none)."""
    roles = (
        select(func.aggregate_strings(UserRoleRow.role, " "))
        .where(UserRoleRow.user_id == UserRow.id)
        .scalar_subquery()
    )
    permissions = (
        select(func.aggregate_strings(RoleRow.permissions, " "))
        .select_from(UserRoleRow)
        .join(RoleRow, RoleRow.name == UserRoleRow.role)
        .where(UserRoleRow.user_id == UserRow.id)
        .scalar_subquery()
    )
    return {"held_roles": roles, "held_permissions": permissions}


def _count(result: object) -> int:
    count = getattr(result, "rowcount", 0)
    return int(count) if isinstance(count, int) else 0


SYNC_BATCH = 500
"""Users whose held grants one UPDATE recomputes (SQLite's bound parameters are limited)."""


class SqlUnitOfWork:
    """One SQLAlchemy transaction, spoken to in core values (see storage.port.UnitOfWork)."""

    def __init__(self, db: AsyncSession) -> None:
        self._db = db
        self.written_events: list[NewEvent] = []
        """The security events written, told (logged, counted) once they are committed."""
        self.ended_sessions: list[tuple[EndReason, int]] = []
        """How many sessions it ended, and why: counted once committed."""

    # -- accounts --------------------------------------------------------------------------
    async def account(self, user_id: str, *, lock: bool = False) -> Account | None:
        # FOR NO KEY UPDATE: it does not block the key-share locks that inserting a session or
        # an event takes on the user row, so it cannot deadlock with them (PostgreSQL).
        row = await self._db.get(UserRow, user_id, with_for_update=NO_KEY_UPDATE if lock else None)
        return None if row is None else _account(row)

    async def account_by_email(self, email: str) -> Account | None:
        row = await queries.user_by_email(self._db, email)
        return None if row is None else _account(row)

    async def add_account(self, account: Account) -> None:
        self._db.add(
            UserRow(
                id=account.id,
                email=account.email,
                password_hash=account.password_hash,
                created_at=account.created_at,
                password_changed_at=account.password_changed_at,
                disabled_at=account.disabled_at,
                email_verified_at=account.email_verified_at,
                app_metadata=dict(account.app_metadata) or None,
                user_metadata=dict(account.user_metadata) or None,
            )
        )
        try:
            await self._db.flush()
        except IntegrityError:
            raise EmailTakenError("an account with this email already exists") from None

    async def set_password_hash(
        self, user_id: str, password_hash: str, *, changed_at: datetime | None = None
    ) -> None:
        values: dict[str, object] = {"password_hash": password_hash}
        if changed_at is not None:
            values["password_changed_at"] = changed_at
            # A sign-in waiting for its second factor passed the old password: void it.
            await self._db.execute(
                delete(MfaChallengeRow).where(MfaChallengeRow.user_id == user_id)
            )
        await self._db.execute(
            update(UserRow).where(UserRow.id == user_id).values(**values),
            execution_options={"synchronize_session": False},
        )

    async def set_disabled(self, user_id: str, disabled_at: datetime | None) -> None:
        await self._db.execute(
            update(UserRow).where(UserRow.id == user_id).values(disabled_at=disabled_at),
            execution_options={"synchronize_session": False},
        )

    async def accounts_with_live_sessions(self, now: datetime) -> list[tuple[Account, int]]:
        live = (
            select(SessionRow.user_id, func.count().label("n"))
            .where(
                SessionRow.revoked_at.is_(None),
                SessionRow.expires_at > now,
                SessionRow.max_expires_at > now,
            )
            .group_by(SessionRow.user_id)
            .subquery()
        )
        query = (
            select(UserRow, func.coalesce(live.c.n, 0))
            .outerjoin(live, live.c.user_id == UserRow.id)
            .order_by(UserRow.email)
        )
        return [(_account(row), int(n)) for row, n in (await self._db.execute(query)).all()]

    async def set_email(self, user_id: str, email: str, *, verified_at: datetime) -> None:
        try:
            async with self._db.begin_nested():
                await self._db.execute(
                    update(UserRow)
                    .where(UserRow.id == user_id)
                    .values(email=email, email_verified_at=verified_at),
                    execution_options={"synchronize_session": False},
                )
        except IntegrityError:
            raise EmailTakenError("an account with this email already exists") from None

    async def set_email_verified(self, user_id: str, at: datetime) -> None:
        await self._db.execute(
            update(UserRow).where(UserRow.id == user_id).values(email_verified_at=at),
            execution_options={"synchronize_session": False},
        )

    async def delete_account(self, user_id: str) -> None:
        # Sessions and links go with the user (ON DELETE CASCADE; SQLite enforces it with
        # foreign_keys=ON). Events keep the opaque id and never held the address.
        await self._db.execute(delete(LinkTokenRow).where(LinkTokenRow.user_id == user_id))
        for table in (MfaChallengeRow, MfaFactorRow, RecoveryCodeRow, PasskeyRow):
            await self._db.execute(delete(table).where(table.user_id == user_id))
        await self._db.execute(delete(UserRoleRow).where(UserRoleRow.user_id == user_id))
        await self._db.execute(delete(SessionRow).where(SessionRow.user_id == user_id))
        await self._db.execute(delete(UserRow).where(UserRow.id == user_id))

    async def accounts_page(
        self, *, after: tuple[datetime, str] | None, email_prefix: str | None, limit: int
    ) -> list[tuple[Account, Grants]]:
        query = select(UserRow)
        if email_prefix:
            query = query.where(UserRow.email.startswith(email_prefix, autoescape=True))
        if after is not None:
            query = query.where(tuple_(UserRow.created_at, UserRow.id) > tuple_(*after))
        query = query.order_by(UserRow.created_at, UserRow.id).limit(limit)
        return [(_account(row), _grants(row)) for row in (await self._db.execute(query)).scalars()]

    async def set_app_metadata(self, user_id: str, value: dict[str, Any]) -> None:
        await self._db.execute(
            update(UserRow).where(UserRow.id == user_id).values(app_metadata=value or None),
            execution_options={"synchronize_session": False},
        )

    async def set_user_metadata(self, user_id: str, value: dict[str, Any]) -> None:
        await self._db.execute(
            update(UserRow).where(UserRow.id == user_id).values(user_metadata=value or None),
            execution_options={"synchronize_session": False},
        )

    # -- roles -----------------------------------------------------------------------------
    async def grants(self, user_id: str) -> Grants:
        found = (
            await self._db.execute(
                select(UserRow.held_roles, UserRow.held_permissions).where(UserRow.id == user_id)
            )
        ).first()
        return Grants.parse(*found) if found is not None else Grants()

    async def _sync_grants(
        self, user_ids: list[str] | None = None, *, role: str | None = None
    ) -> None:
        """Recompute ``held_roles`` / ``held_permissions`` from ``user_roles``: of ``user_ids``,
        or of every holder of ``role``. Every change to ``user_roles`` or to a role's
        permissions calls this in its transaction, so the two never disagree at a commit."""
        update_held = update(UserRow).values(**_aggregates())
        options = {"synchronize_session": False}
        if role is not None:
            holders = select(UserRoleRow.user_id).where(UserRoleRow.role == role)
            await self._db.execute(
                update_held.where(UserRow.id.in_(holders)), execution_options=options
            )
        for start in range(0, len(user_ids or ()), SYNC_BATCH):
            chunk = (user_ids or [])[start : start + SYNC_BATCH]
            await self._db.execute(
                update_held.where(UserRow.id.in_(chunk)), execution_options=options
            )

    async def roles(self) -> list[Role]:
        rows = await self._db.execute(select(RoleRow).order_by(RoleRow.name))
        return [_role(row) for row in rows.scalars()]

    async def role(self, name: str) -> Role | None:
        row = await self._db.get(RoleRow, name)
        return None if row is None else _role(row)

    async def put_role(self, role: Role) -> bool:
        permissions = " ".join(role.permissions)
        changed = await self._db.execute(
            update(RoleRow).where(RoleRow.name == role.name).values(permissions=permissions),
            execution_options={"synchronize_session": False},
        )
        if _count(changed):
            await self._sync_grants(role=role.name)  # its holders' permissions changed
            return False
        try:
            async with self._db.begin_nested():
                self._db.add(
                    RoleRow(name=role.name, permissions=permissions, created_at=role.created_at)
                )
        except IntegrityError:
            raise RetryableConflict("role created meanwhile") from None
        return True

    async def holders_grants(self, role: str) -> list[Grants]:
        holders = select(UserRoleRow.user_id).where(UserRoleRow.role == role)
        found = await self._db.execute(
            select(UserRow.held_roles, UserRow.held_permissions).where(UserRow.id.in_(holders))
        )
        return [Grants.parse(held, granted) for held, granted in found.all()]

    async def delete_role(self, name: str) -> list[str]:
        holders = await self._db.execute(
            delete(UserRoleRow).where(UserRoleRow.role == name).returning(UserRoleRow.user_id)
        )
        users = list(holders.scalars())
        await self._db.execute(delete(RoleRow).where(RoleRow.name == name))
        await self._sync_grants(users)
        return users

    async def grant_role(self, user_id: str, role: str, at: datetime) -> bool:
        if await self._db.get(UserRoleRow, (user_id, role)) is not None:
            return False
        try:
            async with self._db.begin_nested():
                self._db.add(UserRoleRow(user_id=user_id, role=role, granted_at=at))
        except IntegrityError:
            raise RetryableConflict("role granted meanwhile") from None
        await self._sync_grants([user_id])
        return True

    async def revoke_role(self, user_id: str, role: str) -> bool:
        result = await self._db.execute(
            delete(UserRoleRow).where(UserRoleRow.user_id == user_id, UserRoleRow.role == role)
        )
        await self._sync_grants([user_id])
        return _count(result) == 1

    async def grant_existing_roles(
        self, user_id: str, roles: tuple[str, ...], at: datetime
    ) -> None:
        if not roles:
            return
        existing = await self._db.execute(select(RoleRow.name).where(RoleRow.name.in_(roles)))
        for name in existing.scalars():
            self._db.add(UserRoleRow(user_id=user_id, role=name, granted_at=at))
        await self._db.flush()
        await self._sync_grants([user_id])

    # -- mailed links ----------------------------------------------------------------------
    async def add_link(self, link: LinkToken) -> None:
        self._db.add(
            LinkTokenRow(
                id=link.id,
                user_id=link.user_id,
                purpose=link.purpose.value,
                token_hash=link.token_hash,
                email=link.email,
                created_at=link.created_at,
                expires_at=link.expires_at,
                used_at=link.used_at,
            )
        )
        await self._db.flush()

    async def link(self, token_hash: str) -> LinkToken | None:
        row = (
            await self._db.execute(
                select(LinkTokenRow).where(LinkTokenRow.token_hash == token_hash)
            )
        ).scalar_one_or_none()
        if row is None:
            return None
        return LinkToken(
            id=row.id,
            user_id=row.user_id,
            purpose=LinkPurpose(row.purpose),
            token_hash=row.token_hash,
            email=row.email,
            created_at=row.created_at,
            expires_at=row.expires_at,
            used_at=row.used_at,
        )

    # -- second factors ------------------------------------------------------------------
    async def factors(self, user_id: str) -> list[Factor]:
        rows = await self._db.scalars(
            select(MfaFactorRow)
            .where(MfaFactorRow.user_id == user_id)
            .order_by(MfaFactorRow.created_at, MfaFactorRow.id)
        )
        return [
            Factor(
                id=row.id,
                user_id=row.user_id,
                type=FactorType(row.type),
                secret=row.secret,
                created_at=row.created_at,
                confirmed_at=row.confirmed_at,
                last_used_step=row.last_used_step,
                last_used_at=row.last_used_at,
            )
            for row in rows
        ]

    async def add_factor(self, factor: Factor) -> None:
        await self._db.execute(
            delete(MfaFactorRow).where(
                MfaFactorRow.user_id == factor.user_id, MfaFactorRow.confirmed_at.is_(None)
            )
        )
        self._db.add(
            MfaFactorRow(
                id=factor.id,
                user_id=factor.user_id,
                type=factor.type.value,
                secret=factor.secret,
                created_at=factor.created_at,
            )
        )

    async def confirm_factor(self, factor_id: str, step: int, at: datetime) -> bool:
        result = await self._db.execute(
            update(MfaFactorRow)
            .where(MfaFactorRow.id == factor_id, MfaFactorRow.confirmed_at.is_(None))
            .values(confirmed_at=at, last_used_step=step, last_used_at=at),
            execution_options={"synchronize_session": False},
        )
        return _count(result) == 1

    async def use_factor_step(self, factor_id: str, step: int, at: datetime) -> bool:
        result = await self._db.execute(
            update(MfaFactorRow)
            .where(
                MfaFactorRow.id == factor_id,
                MfaFactorRow.confirmed_at.is_not(None),
                or_(MfaFactorRow.last_used_step.is_(None), MfaFactorRow.last_used_step < step),
            )
            .values(last_used_step=step, last_used_at=at),
            execution_options={"synchronize_session": False},
        )
        return _count(result) == 1

    async def delete_factor(self, user_id: str, factor_id: str) -> bool:
        result = await self._db.execute(
            delete(MfaFactorRow).where(
                MfaFactorRow.id == factor_id, MfaFactorRow.user_id == user_id
            ),
            execution_options={"synchronize_session": False},
        )
        left = await self._db.scalar(
            select(func.count())
            .select_from(MfaFactorRow)
            .where(MfaFactorRow.user_id == user_id, MfaFactorRow.confirmed_at.is_not(None))
        )
        if not left:
            await self._db.execute(
                delete(RecoveryCodeRow).where(RecoveryCodeRow.user_id == user_id)
            )
        return _count(result) == 1

    async def replace_recovery_codes(self, user_id: str, hashes: list[str], at: datetime) -> None:
        await self._db.execute(delete(RecoveryCodeRow).where(RecoveryCodeRow.user_id == user_id))
        self._db.add_all(
            RecoveryCodeRow(user_id=user_id, code_hash=code_hash, created_at=at)
            for code_hash in hashes
        )

    async def use_recovery_code(self, user_id: str, code_hash: str, at: datetime) -> bool:
        result = await self._db.execute(
            update(RecoveryCodeRow)
            .where(
                RecoveryCodeRow.user_id == user_id,
                RecoveryCodeRow.code_hash == code_hash,
                RecoveryCodeRow.used_at.is_(None),
            )
            .values(used_at=at),
            execution_options={"synchronize_session": False},
        )
        return _count(result) == 1

    async def recovery_codes_left(self, user_id: str) -> int:
        count = await self._db.scalar(
            select(func.count())
            .select_from(RecoveryCodeRow)
            .where(RecoveryCodeRow.user_id == user_id, RecoveryCodeRow.used_at.is_(None))
        )
        return int(count or 0)

    async def add_mfa_challenge(self, challenge: MfaChallenge) -> None:
        self._db.add(
            MfaChallengeRow(
                id=challenge.id,
                user_id=challenge.user_id,
                token_hash=challenge.token_hash,
                created_at=challenge.created_at,
                expires_at=challenge.expires_at,
                attempts=challenge.attempts,
                enrolling=challenge.enrolling,
            )
        )

    async def mfa_challenge(self, token_hash: str) -> MfaChallenge | None:
        row = await self._db.scalar(
            select(MfaChallengeRow).where(MfaChallengeRow.token_hash == token_hash)
        )
        if row is None:
            return None
        return MfaChallenge(
            id=row.id,
            user_id=row.user_id,
            token_hash=row.token_hash,
            created_at=row.created_at,
            expires_at=row.expires_at,
            attempts=row.attempts,
            used_at=row.used_at,
            enrolling=row.enrolling,
        )

    async def reserve_mfa_attempt(self, challenge_id: str, now: datetime) -> bool:
        result = await self._db.execute(
            update(MfaChallengeRow)
            .where(
                MfaChallengeRow.id == challenge_id,
                MfaChallengeRow.used_at.is_(None),
                MfaChallengeRow.expires_at > now,
                MfaChallengeRow.attempts < CHALLENGE_ATTEMPTS,
            )
            .values(attempts=MfaChallengeRow.attempts + 1),
            execution_options={"synchronize_session": False},
        )
        return _count(result) == 1

    async def use_mfa_challenge(self, challenge_id: str, now: datetime) -> bool:
        result = await self._db.execute(
            update(MfaChallengeRow)
            .where(
                MfaChallengeRow.id == challenge_id,
                MfaChallengeRow.used_at.is_(None),
                MfaChallengeRow.expires_at > now,
                MfaChallengeRow.attempts <= CHALLENGE_ATTEMPTS,
            )
            .values(used_at=now),
            execution_options={"synchronize_session": False},
        )
        return _count(result) == 1

    async def recovery_code_unused(self, user_id: str, code_hash: str) -> bool:
        found = await self._db.scalar(
            select(RecoveryCodeRow.code_hash).where(
                RecoveryCodeRow.user_id == user_id,
                RecoveryCodeRow.code_hash == code_hash,
                RecoveryCodeRow.used_at.is_(None),
            )
        )
        return found is not None

    async def set_authentication(self, session_id: str, authentication: Authentication) -> None:
        await self._db.execute(
            update(SessionRow)
            .where(SessionRow.id == session_id)
            .values(
                amr=authentication.stored(),
                auth_time=authentication.time,
                mfa_time=authentication.second_factor_time,
            ),
            execution_options={"synchronize_session": False},
        )

    # -- passkeys --------------------------------------------------------------------------
    async def passkeys(self, user_id: str) -> list[Passkey]:
        rows = await self._db.scalars(
            select(PasskeyRow)
            .where(PasskeyRow.user_id == user_id)
            .order_by(PasskeyRow.created_at, PasskeyRow.id)
        )
        return [_passkey(row) for row in rows]

    async def passkey_by_credential(self, credential_id: str) -> Passkey | None:
        row = await self._db.scalar(
            select(PasskeyRow).where(PasskeyRow.credential_id == credential_id)
        )
        return None if row is None else _passkey(row)

    async def add_passkey(self, passkey: Passkey) -> None:
        self._db.add(
            PasskeyRow(
                id=passkey.id,
                user_id=passkey.user_id,
                credential_id=passkey.credential_id,
                public_key=passkey.public_key,
                sign_count=passkey.sign_count,
                name=passkey.name,
                transports=" ".join(passkey.transports),
                aaguid=passkey.aaguid,
                backup_eligible=passkey.backup_eligible,
                backed_up=passkey.backed_up,
                created_at=passkey.created_at,
            )
        )
        try:
            await self._db.flush()
        except IntegrityError:
            raise PasskeyTakenError("this passkey is registered already") from None

    async def rename_passkey(self, user_id: str, passkey_id: str, name: str) -> bool:
        result = await self._db.execute(
            update(PasskeyRow)
            .where(PasskeyRow.id == passkey_id, PasskeyRow.user_id == user_id)
            .values(name=name),
            execution_options={"synchronize_session": False},
        )
        return _count(result) == 1

    async def delete_passkey(self, user_id: str, passkey_id: str) -> bool:
        result = await self._db.execute(
            delete(PasskeyRow).where(PasskeyRow.id == passkey_id, PasskeyRow.user_id == user_id),
            execution_options={"synchronize_session": False},
        )
        return _count(result) == 1

    async def passkey_used(
        self, passkey_id: str, sign_count: int, backed_up: bool, at: datetime
    ) -> None:
        await self._db.execute(
            update(PasskeyRow)
            .where(PasskeyRow.id == passkey_id)
            .values(sign_count=sign_count, backed_up=backed_up, last_used_at=at),
            execution_options={"synchronize_session": False},
        )

    async def passkey_handle(self, user_id: str) -> str | None:
        handle: str | None = await self._db.scalar(
            select(UserRow.passkey_handle).where(UserRow.id == user_id)
        )
        return handle

    async def set_passkey_handle(self, user_id: str, handle: str) -> None:
        await self._db.execute(
            update(UserRow)
            .where(UserRow.id == user_id, UserRow.passkey_handle.is_(None))
            .values(passkey_handle=handle),
            execution_options={"synchronize_session": False},
        )

    async def add_webauthn_challenge(self, challenge: WebauthnChallenge) -> None:
        self._db.add(
            WebauthnChallengeRow(
                id=challenge.id,
                purpose=challenge.purpose.value,
                challenge_hash=challenge.challenge_hash,
                user_id=challenge.user_id,
                mfa_challenge_id=challenge.mfa_challenge_id,
                created_at=challenge.created_at,
                expires_at=challenge.expires_at,
            )
        )

    async def use_webauthn_challenge(
        self, challenge_hash: str, now: datetime
    ) -> WebauthnChallenge | None:
        result = await self._db.execute(
            update(WebauthnChallengeRow)
            .where(
                WebauthnChallengeRow.challenge_hash == challenge_hash,
                WebauthnChallengeRow.used_at.is_(None),
                WebauthnChallengeRow.expires_at > now,
            )
            .values(used_at=now),
            execution_options={"synchronize_session": False},
        )
        if _count(result) != 1:
            return None
        row = await self._db.scalar(
            select(WebauthnChallengeRow).where(
                WebauthnChallengeRow.challenge_hash == challenge_hash
            )
        )
        assert row is not None  # noqa: S101 - just updated in this transaction
        return WebauthnChallenge(
            id=row.id,
            purpose=WebauthnPurpose(row.purpose),
            challenge_hash=row.challenge_hash,
            created_at=row.created_at,
            expires_at=row.expires_at,
            user_id=row.user_id,
            mfa_challenge_id=row.mfa_challenge_id,
            used_at=now,
        )

    async def use_link(self, link_id: str, now: datetime) -> bool:
        result = await self._db.execute(
            update(LinkTokenRow)
            .where(
                LinkTokenRow.id == link_id,
                LinkTokenRow.used_at.is_(None),
                LinkTokenRow.expires_at > now,
            )
            .values(used_at=now),
            execution_options={"synchronize_session": False},
        )
        return _count(result) == 1

    async def void_links(
        self, user_id: str, now: datetime, *, purposes: tuple[LinkPurpose, ...] | None = None
    ) -> int:
        query = update(LinkTokenRow).where(
            LinkTokenRow.user_id == user_id, LinkTokenRow.used_at.is_(None)
        )
        if purposes is not None:
            query = query.where(LinkTokenRow.purpose.in_([p.value for p in purposes]))
        result = await self._db.execute(
            query.values(used_at=now), execution_options={"synchronize_session": False}
        )
        return _count(result)

    # -- the mail outbox -------------------------------------------------------------------
    def add_mail(self, mail: OutgoingMail) -> None:
        self._db.add(
            OutboxRow(
                created_at=mail.created_at,
                template=mail.template,
                user_id=mail.user_id,
                payload=mail.payload,
                attempts=0,
                next_attempt_at=mail.next_attempt_at,
            )
        )

    async def mail_due(self, now: datetime) -> bool:
        found = await self._db.execute(
            select(OutboxRow.id)
            .where(
                OutboxRow.sent_at.is_(None),
                OutboxRow.failed_at.is_(None),
                OutboxRow.next_attempt_at <= now,
            )
            .limit(1)
        )
        return found.first() is not None

    async def outbox_backlog(self) -> tuple[int, datetime | None]:
        found = await self._db.execute(
            select(func.count(), func.min(OutboxRow.created_at)).where(
                # Indexed: sent and given-up mails have none, and they are most of the rows.
                OutboxRow.next_attempt_at.is_not(None),
                OutboxRow.sent_at.is_(None),
                OutboxRow.failed_at.is_(None),
            )
        )
        count, oldest = found.one()
        return int(count), oldest

    async def claim_mail(
        self,
        now: datetime,
        *,
        lease_until: datetime,
        new_message_id: Callable[[], str],
        limit: int,
    ) -> list[QueuedMail]:
        # SKIP LOCKED: instances claiming at once take different mails (PostgreSQL); on
        # SQLite the write transaction (BEGIN IMMEDIATE) already makes them take turns.
        rows = (
            (
                await self._db.execute(
                    select(OutboxRow)
                    .where(
                        OutboxRow.sent_at.is_(None),
                        OutboxRow.failed_at.is_(None),
                        OutboxRow.next_attempt_at <= now,
                    )
                    .order_by(OutboxRow.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        claimed = []
        for row in rows:
            row.attempts += 1
            row.next_attempt_at = lease_until
            if row.message_id is None:
                row.message_id = new_message_id()
            claimed.append(
                QueuedMail(
                    id=row.id,
                    template=row.template,
                    user_id=row.user_id,
                    payload=row.payload,
                    message_id=row.message_id,
                    attempts=row.attempts,
                )
            )
        await self._db.flush()
        return claimed

    async def mail_sent(self, mail_id: int, now: datetime) -> None:
        await self._db.execute(
            update(OutboxRow)
            .where(OutboxRow.id == mail_id)
            .values(sent_at=now, payload=None, next_attempt_at=None, last_error=None),
            execution_options={"synchronize_session": False},
        )

    async def mail_retry(
        self, mail_id: int, at: datetime, error: str, *, uncount: bool = False
    ) -> None:
        attempts = OutboxRow.attempts - 1 if uncount else OutboxRow.attempts
        await self._db.execute(
            update(OutboxRow)
            .where(OutboxRow.id == mail_id)
            .values(next_attempt_at=at, last_error=error[:200], attempts=attempts),
            execution_options={"synchronize_session": False},
        )

    async def mail_failed(self, mail_id: int, now: datetime, error: str) -> None:
        await self._db.execute(
            update(OutboxRow)
            .where(OutboxRow.id == mail_id)
            .values(failed_at=now, next_attempt_at=None, last_error=error[:200]),
            execution_options={"synchronize_session": False},
        )

    async def requeue_mail(self, mail_id: int, now: datetime) -> bool:
        result = await self._db.execute(
            update(OutboxRow)
            .where(
                OutboxRow.id == mail_id,
                OutboxRow.failed_at.is_not(None),
                OutboxRow.payload.is_not(None),
            )
            .values(failed_at=None, attempts=0, next_attempt_at=now, last_error=None),
            execution_options={"synchronize_session": False},
        )
        return _count(result) == 1

    async def resolve_mail(self, mail_id: int, payload: str, user_id: str | None) -> None:
        await self._db.execute(
            update(OutboxRow)
            .where(OutboxRow.id == mail_id)
            .values(payload=payload, user_id=user_id),
            execution_options={"synchronize_session": False},
        )

    async def delete_mail(self, mail_id: int) -> None:
        await self._db.execute(delete(OutboxRow).where(OutboxRow.id == mail_id))

    async def drop_mail(self, user_id: str) -> int:
        result = await self._db.execute(
            delete(OutboxRow).where(OutboxRow.user_id == user_id, OutboxRow.sent_at.is_(None))
        )
        return _count(result)

    async def mails(self, limit: int) -> list[MailState]:
        rows = (
            (await self._db.execute(select(OutboxRow).order_by(OutboxRow.id.desc()).limit(limit)))
            .scalars()
            .all()
        )
        return [
            MailState(
                id=row.id,
                template=row.template,
                created_at=row.created_at,
                attempts=row.attempts,
                next_attempt_at=row.next_attempt_at,
                sent_at=row.sent_at,
                failed_at=row.failed_at,
                last_error=row.last_error,
                payload_kept=row.payload is not None,
            )
            for row in rows
        ]

    # -- sessions --------------------------------------------------------------------------
    async def add_session(self, session: Session) -> None:
        self._db.add(queries.session_row(session))

    async def session(self, session_id: str, *, lock: bool = False) -> Session | None:
        row = await self._db.get(SessionRow, session_id, with_for_update=lock or None)
        return None if row is None else queries.to_session(row)

    async def session_and_account(self, session_id: str) -> tuple[Session, Account, Grants] | None:
        found = (
            await self._db.execute(
                select(SessionRow, UserRow)
                .join(UserRow, UserRow.id == SessionRow.user_id)
                .where(SessionRow.id == session_id)
            )
        ).first()
        if found is None:
            return None
        session, user = found
        return queries.to_session(session), _account(user), _grants(user)

    async def load_for_rotation(self, session_id: str) -> tuple[Session, bool] | None:
        return await queries.load_for_rotation(self._db, session_id)

    async def save_rotation(self, outcome: RotationOutcome) -> None:
        ended = await queries.save_rotation(self._db, outcome)
        if outcome.event is not None:
            self.written_events.append(outcome.event)
        if outcome.reused:
            self.ended_sessions.append((EndReason.REUSE_DETECTED, ended))

    async def end_sessions(
        self,
        user_id: str,
        now: datetime,
        reason: EndReason,
        *,
        only: str | None = None,
        keep: str | None = None,
        oldest: int | None = None,
    ) -> list[str]:
        ended = await queries.end_sessions(
            self._db, user_id, now, reason, only=only, keep=keep, oldest=oldest
        )
        self.ended_sessions.append((reason, len(ended)))
        return ended

    async def end_sessions_of(
        self, user_ids: list[str], now: datetime, reason: EndReason
    ) -> list[str]:
        ended = await queries.end_sessions_of(self._db, user_ids, now, reason)
        self.ended_sessions.append((reason, len(ended)))
        return ended

    async def live_session_count(self, user_id: str, now: datetime) -> int:
        return await queries.live_session_count(self._db, user_id, now)

    async def live_sessions(
        self, user_id: str, now: datetime, *, current: str | None = None
    ) -> list[SessionInfo]:
        return await queries.live_sessions(self._db, user_id, now, current=current)

    # -- events ----------------------------------------------------------------------------
    def add_event(self, event: NewEvent) -> None:
        self._db.add(queries.event_row(event))
        self.written_events.append(event)

    async def events(
        self, *, user_id: str | None = None, after_id: int | None = None, limit: int = 50
    ) -> list[EventInfo]:
        return await queries.events_page(self._db, user_id=user_id, after_id=after_id, limit=limit)

    # -- resource servers and the revocation feed ------------------------------------------
    async def add_client(self, client: ClientRecord) -> None:
        self._db.add(
            ClientRow(
                id=client.id,
                name=client.name,
                secret_hash=client.secret_hash,
                created_at=client.created_at,
                scopes=" ".join(client.scopes),
            )
        )

    async def client(self, client_id: str) -> ClientRecord | None:
        row = await self._db.get(ClientRow, client_id)
        return None if row is None else _client(row)

    async def clients(self) -> list[ClientRecord]:
        rows = await self._db.execute(select(ClientRow).order_by(ClientRow.created_at))
        return [_client(row) for row in rows.scalars()]

    async def delete_client(self, client_id: str) -> bool:
        result = await self._db.execute(delete(ClientRow).where(ClientRow.id == client_id))
        return bool(_count(result))

    async def last_revocation(self) -> int:
        last = (await self._db.execute(select(func.max(RevocationRow.id)))).scalar_one()
        return int(last or 0)

    async def revocations(
        self, *, after: int, upto: int, since: datetime | None, limit: int
    ) -> list[RevocationEntry]:
        query = (
            select(RevocationRow.id, RevocationRow.session_id, RevocationRow.revoked_at)
            .where(RevocationRow.id > after, RevocationRow.id <= upto)
            .order_by(RevocationRow.id)
            .limit(limit)
        )
        if since is not None:
            query = query.where(RevocationRow.revoked_at >= since)
        rows = (await self._db.execute(query)).all()
        return [RevocationEntry(number, sid, at) for number, sid, at in rows]

    # -- housekeeping ----------------------------------------------------------------------
    async def prune(self, *, ended_before: datetime, events_before: datetime) -> tuple[int, int]:
        sessions = await self._db.execute(
            delete(SessionRow).where(
                or_(
                    SessionRow.revoked_at < ended_before,
                    SessionRow.expires_at < ended_before,
                    SessionRow.max_expires_at < ended_before,
                )
            )
        )
        events = await self._db.execute(delete(EventRow).where(EventRow.at < events_before))
        # The feed reaches back one access token lifetime; the grace covers it many times.
        await self._db.execute(delete(RevocationRow).where(RevocationRow.revoked_at < ended_before))
        await self._db.execute(
            delete(MfaChallengeRow).where(MfaChallengeRow.expires_at < ended_before)
        )
        await self._db.execute(
            delete(WebauthnChallengeRow).where(WebauthnChallengeRow.expires_at < ended_before)
        )
        # Enrolments never confirmed (their sealed secrets with them).
        await self._db.execute(
            delete(MfaFactorRow).where(
                MfaFactorRow.confirmed_at.is_(None), MfaFactorRow.created_at < ended_before
            )
        )
        # Links and mails: used or expired links go with ended sessions; sent mails (their
        # payloads already wiped) with old events; a given-up mail's sealed payload, kept for
        # `tokenward mail retry`, after a day.
        await self._db.execute(
            delete(LinkTokenRow).where(
                or_(LinkTokenRow.used_at < ended_before, LinkTokenRow.expires_at < ended_before)
            )
        )
        await self._db.execute(
            delete(OutboxRow).where(
                or_(OutboxRow.sent_at < events_before, OutboxRow.failed_at < events_before)
            )
        )
        await self._db.execute(
            update(OutboxRow)
            .where(OutboxRow.failed_at < ended_before, OutboxRow.payload.is_not(None))
            .values(payload=None)
        )
        return _count(sessions), _count(events)


class SqlStore:
    """Units of work on a :class:`Database` (see storage.port.Store)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @asynccontextmanager
    async def write(self) -> AsyncIterator[UnitOfWork]:
        async with self.database.write() as db:
            work = SqlUnitOfWork(db)
            yield work
        # Committed: the events are logged once, never for a transaction rolled back (and
        # perhaps retried).
        committed(work.written_events, work.ended_sessions)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[UnitOfWork]:
        async with self.database.read() as db:
            yield SqlUnitOfWork(db)
