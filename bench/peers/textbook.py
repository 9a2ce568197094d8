"""The textbook peer: GET one and list, written the way FastAPI's tutorial shows.

Async SQLAlchemy ORM models over cbstop's own tables, an `AsyncSession` per request from a
dependency, a dependency that authenticates the bearer key by its hash (HMAC-SHA256 under
CBSTOP_KEY_SECRET, as cbstop stores it) and checks its ability, Pydantic `response_model`s
built `from_attributes`. Scope is computed honestly for each key kind (an organisation; a
partner's organisations through the denormalised `integrations.partner_id`, indexed; a
non-admin group's assigned organisations) and `count` is `COUNT(*)` over that scope. Errors
use cbstop's envelope. Nothing is cached between requests: that is what the tutorial writes.

    CBSTOP_DATABASE_URL=postgresql://... CBSTOP_KEY_SECRET=... \
        python -m uvicorn bench.peers.textbook:app --workers 2
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from sqlalchemy import BigInteger, ColumnElement, ForeignKey, Text, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload


def _async_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


DATABASE_URL = _async_url(os.environ.get("CBSTOP_DATABASE_URL", "postgresql://localhost/cbstop"))
KEY_SECRET = os.environ.get("CBSTOP_KEY_SECRET", "")

engine = create_async_engine(DATABASE_URL)
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


# --- models -------------------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    partner_id: Mapped[str | None] = mapped_column(Text)


class PartnerGroup(Base):
    __tablename__ = "partner_groups"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    partner_id: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    is_admin: Mapped[bool]


class PartnerGroupOrganisation(Base):
    __tablename__ = "partner_group_organisations"

    partner_group_id: Mapped[str] = mapped_column(
        Text, ForeignKey("partner_groups.id"), primary_key=True
    )
    organisation_id: Mapped[str] = mapped_column(
        Text, ForeignKey("organisations.id"), primary_key=True
    )
    partner_id: Mapped[str] = mapped_column(Text)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    key_hash: Mapped[str] = mapped_column(Text, unique=True)
    organisation_id: Mapped[str | None] = mapped_column(Text, ForeignKey("organisations.id"))
    partner_group_id: Mapped[str | None] = mapped_column(Text, ForeignKey("partner_groups.id"))
    abilities: Mapped[str] = mapped_column(Text)
    revoked: Mapped[bool]

    partner_group: Mapped[PartnerGroup | None] = relationship(lazy="joined")


class IntegrationMerchant(Base):
    __tablename__ = "integration_merchants"

    integration_id: Mapped[str] = mapped_column(
        Text, ForeignKey("integrations.id"), primary_key=True
    )
    position: Mapped[int] = mapped_column(primary_key=True)
    merchant_id: Mapped[str] = mapped_column(Text)
    organisation_id: Mapped[str] = mapped_column(Text)


class Integration(Base):
    __tablename__ = "integrations"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    organisation_id: Mapped[str] = mapped_column(Text, ForeignKey("organisations.id"))
    partner_id: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)

    merchants: Mapped[list[IntegrationMerchant]] = relationship(
        order_by=IntegrationMerchant.position
    )

    @property
    def merchant_ids(self) -> list[str]:
        return [m.merchant_id for m in self.merchants]

    @property
    def links(self) -> list[dict[str, str]]:
        return [{"rel": "self", "uri": f"/v1/integrations/{self.id}"}]


# --- schemas ------------------------------------------------------------------------------


class Link(BaseModel):
    rel: str
    uri: str


class IntegrationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    organisation_id: str
    name: str
    type: str
    status: str
    merchant_ids: list[str]
    links: list[Link]


class IntegrationList(BaseModel):
    items: list[IntegrationOut]
    count: int


# --- dependencies -------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code, self.message = status, code, message


async def get_db() -> AsyncIterator[AsyncSession]:
    async with SessionLocal() as session:
        yield session


bearer = HTTPBearer(auto_error=False)


async def get_api_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    db: Annotated[AsyncSession, Depends(get_db)],
) -> ApiKey:
    if credentials is None:
        raise ApiError(401, "UNAUTHORISED", "Unauthorised")
    digest = hmac.new(KEY_SECRET.encode(), credentials.credentials.encode(), hashlib.sha256)
    result = await db.execute(
        select(ApiKey).where(ApiKey.key_hash == digest.hexdigest(), ApiKey.revoked.is_(False))
    )
    key = result.scalar_one_or_none()
    if key is None:
        raise ApiError(401, "UNAUTHORISED", "Unauthorised")
    if "integrations:read" not in key.abilities.split():
        raise ApiError(403, "FORBIDDEN", "Forbidden")
    return key


def scope_filter(key: ApiKey) -> ColumnElement[bool]:
    """The integrations this key may see."""
    if key.organisation_id is not None:
        return Integration.organisation_id == key.organisation_id
    group = key.partner_group
    assert group is not None
    if group.is_admin:
        return Integration.partner_id == group.partner_id
    assigned = select(PartnerGroupOrganisation.organisation_id).where(
        PartnerGroupOrganisation.partner_group_id == group.id
    )
    return Integration.organisation_id.in_(assigned)


# --- app ----------------------------------------------------------------------------------

app = FastAPI(title="Integrations (textbook peer)")


@app.exception_handler(ApiError)
async def api_error_handler(request: Request, exc: ApiError) -> JSONResponse:
    body = {"errors": [{"code": exc.code, "message": exc.message}]}
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(body, status_code=exc.status, headers=headers)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/v1/integrations", response_model=IntegrationList)
async def list_integrations(
    key: Annotated[ApiKey, Depends(get_api_key)],
    db: Annotated[AsyncSession, Depends(get_db)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> IntegrationList:
    scope = scope_filter(key)
    count = await db.scalar(select(func.count()).select_from(Integration).where(scope))
    result = await db.execute(
        select(Integration)
        .options(selectinload(Integration.merchants))
        .where(scope)
        .order_by(Integration.created_at.desc(), Integration.id)
        .limit(limit)
        .offset(offset)
    )
    items = [IntegrationOut.model_validate(i) for i in result.scalars()]
    return IntegrationList(items=items, count=count or 0)


@app.get("/v1/integrations/{integration_id}", response_model=IntegrationOut)
async def get_integration(
    integration_id: str,
    key: Annotated[ApiKey, Depends(get_api_key)],
    db: Annotated[AsyncSession, Depends(get_db)],
) -> Integration:
    result = await db.execute(
        select(Integration)
        .options(selectinload(Integration.merchants))
        .where(Integration.id == integration_id, scope_filter(key))
    )
    integration = result.scalar_one_or_none()
    if integration is None:
        raise HTTPException(status_code=404, detail="Not found")
    return integration


@app.exception_handler(HTTPException)
async def http_error_handler(request: Request, exc: HTTPException) -> JSONResponse:
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "ERROR")
    body = {"errors": [{"code": code, "message": str(exc.detail)}]}
    return JSONResponse(body, status_code=exc.status_code)
