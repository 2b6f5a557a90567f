"""Bearer tokens of the API: each maps to a team and a role; the store keeps only their SHA-256 digests.

| role      | jobs it sees          | submits into           | cancels           | cost reports      |
|-----------|-----------------------|------------------------|-------------------|-------------------|
| submitter | its team's            | its team's queues      | its team's jobs   | its team's rows   |
| finance   | its team's            | nothing                | nothing           | every row         |
| ops       | all                   | any queue              | any job           | every row         |
| admin     | all                   | any queue              | any job           | every row         |

Every role reads clusters and the policy.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update

from spillover.scheduler.errors import UserError
from spillover.scheduler.store import Store
from spillover.scheduler.tables import ApiTokenRow

ROLES = ("submitter", "ops", "finance", "admin")
PREFIX = "spo_"


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for."""

    token_id: str
    name: str
    team: str
    role: str

    @property
    def sees_all_jobs(self) -> bool:
        return self.role in ("ops", "admin")

    @property
    def reads_all_costs(self) -> bool:
        return self.role in ("finance", "ops", "admin")

    @property
    def may_submit(self) -> bool:
        return self.role != "finance"

    @property
    def job_team(self) -> str | None:
        """The only team whose jobs this token may see; None for all."""
        return None if self.sees_all_jobs else self.team


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: never the token itself."""

    id: str
    name: str
    team: str
    role: str
    created_at: float
    revoked_at: float | None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(store: Store, *, team: str, role: str, name: str, now: float) -> tuple[TokenInfo, str]:
    """A new token; the caller shows the returned token once, the store keeps its digest."""
    if role not in ROLES:
        raise UserError(f"--role: must be one of {', '.join(ROLES)} (got {role!r})")
    if not 1 <= len(name) <= 63:
        raise UserError("--name: must be 1 to 63 characters")
    if not 1 <= len(team) <= 63:
        raise UserError("--team: must be 1 to 63 characters")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiTokenRow(id=secrets.token_hex(4), name=name, team=team, role=role, digest=digest(token),
                      created_at=now, revoked_at=None)
    with store.tx() as s:
        s.add(row)
    return TokenInfo(row.id, name, team, role, now, None), token


def list_tokens(store: Store) -> list[TokenInfo]:
    t = ApiTokenRow.__table__
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.c.id, t.c.name, t.c.team, t.c.role, t.c.created_at, t.c.revoked_at)
                            .order_by(t.c.created_at, t.c.id)).all()
    return [TokenInfo(*r) for r in rows]


def revoke_token(store: Store, token_id: str, *, now: float) -> TokenInfo:
    """Revoke by public id; revoking twice keeps the first time."""
    with store.tx() as s:
        row = s.get(ApiTokenRow, token_id)
        if row is None:
            raise UserError(f"unknown token id {token_id!r}; `spillover token list` shows the ids")
        if row.revoked_at is None:
            s.execute(update(ApiTokenRow).where(ApiTokenRow.id == token_id).values(revoked_at=now))
            row.revoked_at = now
        return TokenInfo(row.id, row.name, row.team, row.role, row.created_at, row.revoked_at)


def authenticate(store: Store, token: str | None) -> Principal | None:
    """The principal of a valid, unrevoked token; None otherwise. Looked up on every request, so a revoke is
    effective at once, also from another process."""
    if not token or not token.startswith(PREFIX) or len(token) > 200:
        return None
    d = digest(token)
    t = ApiTokenRow.__table__
    with store.engine.connect() as conn:
        row = conn.execute(select(t.c.id, t.c.name, t.c.team, t.c.role, t.c.digest)
                           .where(t.c.digest == d, t.c.revoked_at.is_(None))).first()
    if row is None or not hmac.compare_digest(row.digest, d):
        return None
    return Principal(row.id, row.name, row.team, row.role)
