"""Parties: the platform, service providers, merchants with their stores and collection codes,
consumers and partner institutions.

Each state change is one ``do_*`` function that checks, writes, opens the party's ledger accounts
and emits its event in the caller's transaction. A service provider onboards merchants as its
sub-merchants and sets their fee rate within the platform's bounds; a merchant collects only once
its KYC status is ``approved`` and while it is ``active``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row, select

from lianjie import events, ledger
from lianjie.clock import from_us
from lianjie.db import DriverSql, rows_in
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id, secret_token
from lianjie.ledger import AccountFlags, AccountStatus, Purpose
from lianjie.payments.config import PaymentsConfig
from lianjie.payments.schema import parties, qr_codes, stores

PLATFORM_ID = "plt_platform"
NAME_LENGTH_MAX = 200
PAGE_SIZE_MAX = 100


class PartyKind(StrEnum):
    PLATFORM = "platform"
    SERVICE_PROVIDER = "service_provider"
    MERCHANT = "merchant"
    CONSUMER = "consumer"
    INSTITUTION = "institution"


class KycStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


_PREFIX = {PartyKind.SERVICE_PROVIDER: "sp", PartyKind.MERCHANT: "mch",
           PartyKind.CONSUMER: "cus", PartyKind.INSTITUTION: "ins"}

# The ledger accounts each kind of party holds, with their limit flags.
_ACCOUNTS: dict[PartyKind, tuple[tuple[Purpose, AccountFlags], ...]] = {
    PartyKind.PLATFORM: ((Purpose.FEE_REVENUE, AccountFlags.NONE),),
    PartyKind.SERVICE_PROVIDER: ((Purpose.SP_COMMISSION, AccountFlags.NONE),),
    PartyKind.MERCHANT: ((Purpose.MERCHANT_PENDING, AccountFlags.NONE),
                         (Purpose.MERCHANT_AVAILABLE, AccountFlags.NONE)),
    PartyKind.CONSUMER: ((Purpose.WALLET, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS),),
    PartyKind.INSTITUTION: ((Purpose.INSTITUTION_SETTLEMENT, AccountFlags.NONE),),
}


@dataclass(frozen=True, slots=True)
class Party:
    id: str
    kind: PartyKind
    name: str
    status: str
    kyc_status: KycStatus
    parent_id: str | None
    business_type: str | None
    fee_rate_bps: int | None
    commission_share_bps: int | None
    webhook_url: str | None
    webhook_secret: str | None
    created_at: datetime

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True, slots=True)
class Store:
    id: str
    merchant_id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class QrCode:
    id: str
    merchant_id: str
    store_id: str | None
    description: str
    currency: str
    active: bool
    created_at: datetime


def _party(row: Row[tuple[object, ...]]) -> Party:
    m = row._mapping
    return Party(id=m["id"], kind=PartyKind(m["kind"]), name=m["name"], status=m["status"],
                 kyc_status=KycStatus(m["kyc_status"]), parent_id=m["parent_id"],
                 business_type=m["business_type"], fee_rate_bps=m["fee_rate_bps"],
                 commission_share_bps=m["commission_share_bps"], webhook_url=m["webhook_url"],
                 webhook_secret=m["webhook_secret"], created_at=m["created_at"])


# Driver SQL written once (``db.DriverSql``): a payment reads three parties and creating an
# order one, and through SQLAlchemy each read cost several times what the database does.
_COLUMNS = ("id, kind, name, status, kyc_status, parent_id, business_type, fee_rate_bps,"
            " commission_share_bps, webhook_url, webhook_secret, created_at")
_PARTY_BY_ID = DriverSql(f"SELECT {_COLUMNS} FROM parties WHERE id = ?")
# The payer, the merchant and the merchant's service provider (if any) in one statement.
_PAYMENT_PARTIES = DriverSql(
    f"SELECT {_COLUMNS} FROM parties WHERE id = ? OR id = ?"
    " OR id = (SELECT parent_id FROM parties WHERE id = ?)")


def _party_of(row: Sequence[Any]) -> Party:
    """A party from a driver row in ``_COLUMNS`` order."""
    return Party(id=row[0], kind=PartyKind(row[1]), name=row[2], status=row[3],
                 kyc_status=KycStatus(row[4]), parent_id=row[5], business_type=row[6],
                 fee_rate_bps=row[7], commission_share_bps=row[8], webhook_url=row[9],
                 webhook_secret=row[10], created_at=from_us(row[11]))


def get_party(conn: Connection, party_id: str) -> Party | None:
    row = _PARTY_BY_ID.run(conn, (party_id,)).fetchone()
    return None if row is None else _party_of(row)


def payment_parties(conn: Connection, payer_id: str, merchant_id: str
                    ) -> tuple[Party | None, Party | None, Party | None]:
    """The payer, the merchant and the merchant's service provider, read in one statement;
    None for one that does not exist (or, for the last, a merchant without one)."""
    found = {p.id: p for p in map(_party_of, _PAYMENT_PARTIES.run(
        conn, (payer_id, merchant_id, merchant_id)).fetchall())}
    merchant = found.get(merchant_id)
    parent_id = merchant.parent_id if merchant is not None else None
    return found.get(payer_id), merchant, found.get(parent_id) if parent_id else None


_PARTIES_IN = f"SELECT {_COLUMNS} FROM parties WHERE id {{in}}"  # for ``db.rows_in``


def parties_by_id(conn: Connection, ids: Iterable[str]) -> dict[str, Party]:
    """The parties among ``ids`` that exist, by id: one statement (a chunk of ids each)."""
    return {p.id: p for p in map(_party_of, rows_in(conn, _PARTIES_IN, (), sorted(set(ids))))}


def require_party(conn: Connection, party_id: str, kind: PartyKind | None = None,
                  param: str = "id") -> Party:
    party = get_party(conn, party_id) if isinstance(party_id, str) else None
    if party is None or (kind is not None and party.kind != kind):
        what = kind.value.replace("_", " ") if kind else "party"
        raise DomainError(ErrorCode.PARTY_NOT_FOUND, f"no {what} {party_id!r}", param)
    return party


def list_parties(conn: Connection, kind: PartyKind, *, parent_id: str | None = None,
                 after: str | None = None, limit: int = 50) -> list[Party]:
    """Parties of one kind in id order, after the cursor ``after``."""
    assert 0 < limit <= PAGE_SIZE_MAX + 1  # a full page and one more row: is there more?
    query = select(parties).where(parties.c.kind == kind.value)
    if parent_id is not None:
        query = query.where(parties.c.parent_id == parent_id)
    if after is not None:
        query = query.where(parties.c.id > after)
    return [_party(r) for r in conn.execute(query.order_by(parties.c.id).limit(limit))]


def account_id(conn: Connection, party_id: str, purpose: Purpose, currency: str) -> int:
    """The id of a party's ledger account, opening it on first use (any currency works)."""
    found = ledger.find_account(conn, party_id, purpose, currency)
    if found is not None:
        return found.id
    party = require_party(conn, party_id)
    flags = dict(_ACCOUNTS[party.kind]).get(purpose)
    assert flags is not None, f"{party.kind} holds no {purpose} account"
    return ledger.open_account(conn, party.created_at, party_id, purpose, currency, flags).id


def account_ids(conn: Connection, wanted: Sequence[tuple[str, Purpose]], currency: str
                ) -> list[int]:
    """``account_id`` for several (party, purpose) pairs of one currency, in order: one
    statement when they all exist, as they do for every payment after a party's first."""
    found = ledger.find_accounts(conn, wanted, currency)
    return [found[(party_id, purpose)].id if (party_id, purpose) in found
            else account_id(conn, party_id, purpose, currency) for party_id, purpose in wanted]


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_LENGTH_MAX:
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          f"name must be 1 to {NAME_LENGTH_MAX} characters", "name")
    return name.strip()


def _insert(conn: Connection, now: datetime, cfg: PaymentsConfig, kind: PartyKind, name: str,
            **values: object) -> Party:
    party_id = PLATFORM_ID if kind == PartyKind.PLATFORM else new_id(_PREFIX[kind])
    kyc = values.pop("kyc_status", KycStatus.APPROVED.value)
    conn.execute(parties.insert().values(
        id=party_id, kind=kind.value, name=_check_name(name), status="active", kyc_status=kyc,
        created_at=now, webhook_secret=values.pop("webhook_secret", None), **values))
    for purpose, flags in _ACCOUNTS[kind]:
        ledger.open_account(conn, now, party_id, purpose, cfg.currency, flags)
    party = require_party(conn, party_id)
    events.emit(conn, now, f"{kind.value}.created", party_id, {"id": party_id, "name": name})
    return party


def ensure_platform(conn: Connection, now: datetime, cfg: PaymentsConfig) -> Party:
    found = get_party(conn, PLATFORM_ID)
    if found is not None:
        return found
    return _insert(conn, now, cfg, PartyKind.PLATFORM, cfg.platform_name)


def _check_bps(value: object, low: int, high: int, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DomainError(ErrorCode.FEE_RATE_OUT_OF_BOUNDS,
                          f"{param} must be an integer from {low} to {high}", param)
    return value


def do_create_service_provider(conn: Connection, now: datetime, cfg: PaymentsConfig, name: str,
                               commission_share_bps: int | None = None,
                               webhook_url: str | None = None) -> Party:
    share = cfg.default_commission_share_bps if commission_share_bps is None else \
        commission_share_bps
    return _insert(conn, now, cfg, PartyKind.SERVICE_PROVIDER, name,
                   commission_share_bps=_check_bps(share, 0, 10_000, "commission_share_bps"),
                   webhook_url=_check_url(webhook_url), webhook_secret=secret_token())


def do_onboard_merchant(conn: Connection, now: datetime, cfg: PaymentsConfig, name: str, *,
                        sp_id: str | None, business_type: str, fee_rate_bps: int | None = None,
                        webhook_url: str | None = None) -> Party:
    """A merchant joins, directly or as a service provider's sub-merchant; KYC starts pending."""
    if sp_id is not None:
        sp = require_party(conn, sp_id, PartyKind.SERVICE_PROVIDER, "service_provider_id")
        if not sp.active:
            raise DomainError(ErrorCode.MERCHANT_FROZEN, "the service provider is frozen",
                              "service_provider_id")
    rate = cfg.default_fee_rate_bps if fee_rate_bps is None else fee_rate_bps
    if business_type not in cfg.business_types:
        raise DomainError(ErrorCode.INVALID_REQUEST,
                          f"business_type must be one of {sorted(cfg.business_types)}",
                          "business_type")
    return _insert(conn, now, cfg, PartyKind.MERCHANT, name, parent_id=sp_id,
                   business_type=business_type, kyc_status=KycStatus.PENDING.value,
                   fee_rate_bps=_check_bps(rate, cfg.fee_rate_bps_min, cfg.fee_rate_bps_max,
                                           "fee_rate_bps"),
                   webhook_url=_check_url(webhook_url), webhook_secret=secret_token())


def _check_url(url: str | None) -> str | None:
    if url is None:
        return None
    if not isinstance(url, str) or len(url) > 500 or not url.startswith(("http://", "https://")):
        raise DomainError(ErrorCode.INVALID_REQUEST, "webhook_url must be an http(s) URL",
                          "webhook_url")
    return url


def do_decide_kyc(conn: Connection, now: datetime, merchant_id: str, approve: bool) -> Party:
    merchant = require_party(conn, merchant_id, PartyKind.MERCHANT, "merchant_id")
    if merchant.kyc_status != KycStatus.PENDING:
        raise DomainError(ErrorCode.INVALID_STATE_TRANSITION,
                          f"KYC is already {merchant.kyc_status.value}", "decision")
    status = KycStatus.APPROVED if approve else KycStatus.REJECTED
    conn.execute(parties.update().where(parties.c.id == merchant_id)
                 .values(kyc_status=status.value))
    events.emit(conn, now, f"merchant.kyc_{status.value}", merchant_id, {"id": merchant_id})
    return require_party(conn, merchant_id)


def do_set_fee_rate(conn: Connection, now: datetime, cfg: PaymentsConfig, merchant_id: str,
                    fee_rate_bps: int) -> Party:
    require_party(conn, merchant_id, PartyKind.MERCHANT, "merchant_id")
    rate = _check_bps(fee_rate_bps, cfg.fee_rate_bps_min, cfg.fee_rate_bps_max, "fee_rate_bps")
    conn.execute(parties.update().where(parties.c.id == merchant_id).values(fee_rate_bps=rate))
    events.emit(conn, now, "merchant.fee_rate_changed", merchant_id,
                {"id": merchant_id, "fee_rate_bps": rate})
    return require_party(conn, merchant_id)


def do_set_frozen(conn: Connection, now: datetime, party_id: str, frozen: bool) -> Party:
    """Freeze or unfreeze a party and every ledger account it owns."""
    party = require_party(conn, party_id)
    if party.kind == PartyKind.PLATFORM:
        raise DomainError(ErrorCode.FORBIDDEN, "the platform cannot be frozen", "id")
    conn.execute(parties.update().where(parties.c.id == party_id)
                 .values(status="frozen" if frozen else "active"))
    target = AccountStatus.FROZEN if frozen else AccountStatus.OPEN
    for account in ledger.accounts_of(conn, party_id):
        if account.status != AccountStatus.CLOSED and account.status != target:
            ledger.set_account_status(conn, account.id, target)
    events.emit(conn, now, f"{party.kind.value}.{'frozen' if frozen else 'unfrozen'}",
                party_id, {"id": party_id})
    return require_party(conn, party_id)


def do_create_consumer(conn: Connection, now: datetime, cfg: PaymentsConfig, name: str
                       ) -> Party:
    return _insert(conn, now, cfg, PartyKind.CONSUMER, name)


def do_create_institution(conn: Connection, now: datetime, cfg: PaymentsConfig, name: str
                          ) -> Party:
    return _insert(conn, now, cfg, PartyKind.INSTITUTION, name)


def do_create_store(conn: Connection, now: datetime, merchant_id: str, name: str) -> Store:
    require_party(conn, merchant_id, PartyKind.MERCHANT, "merchant_id")
    store = Store(new_id("sto"), merchant_id, _check_name(name), now)
    conn.execute(stores.insert().values(id=store.id, merchant_id=merchant_id, name=store.name,
                                        created_at=now))
    return store


def get_store(conn: Connection, store_id: str) -> Store | None:
    row = conn.execute(select(stores).where(stores.c.id == store_id)).first()
    return None if row is None else Store(row.id, row.merchant_id, row.name, row.created_at)


def do_create_qr_code(conn: Connection, now: datetime, cfg: PaymentsConfig, merchant_id: str,
                      description: str, store_id: str | None = None) -> QrCode:
    """A static collection code: the payer scans it and enters the amount."""
    require_party(conn, merchant_id, PartyKind.MERCHANT, "merchant_id")
    if store_id is not None:
        store = get_store(conn, store_id)
        if store is None or store.merchant_id != merchant_id:
            raise DomainError(ErrorCode.NOT_FOUND, f"no store {store_id!r}", "store_id")
    code = QrCode(new_id("qr"), merchant_id, store_id, _check_name(description), cfg.currency,
                  True, now)
    conn.execute(qr_codes.insert().values(id=code.id, merchant_id=merchant_id, store_id=store_id,
                                          description=code.description, currency=code.currency,
                                          active=1, created_at=now))
    return code


def get_qr_code(conn: Connection, qr_id: str) -> QrCode | None:
    row = conn.execute(select(qr_codes).where(qr_codes.c.id == qr_id)).first()
    if row is None:
        return None
    return QrCode(row.id, row.merchant_id, row.store_id, row.description, row.currency,
                  bool(row.active), row.created_at)


def require_collecting_merchant(conn: Connection, merchant_id: str) -> Party:
    """The merchant, if it may collect money now: KYC approved and not frozen."""
    return check_collecting(require_party(conn, merchant_id, PartyKind.MERCHANT, "merchant_id"))


def check_collecting(merchant: Party) -> Party:
    """``require_collecting_merchant`` for a merchant already read in this transaction."""
    assert merchant.kind == PartyKind.MERCHANT
    if merchant.kyc_status != KycStatus.APPROVED:
        raise DomainError(ErrorCode.MERCHANT_NOT_APPROVED,
                          f"merchant KYC is {merchant.kyc_status.value}", "merchant_id")
    if not merchant.active:
        raise DomainError(ErrorCode.MERCHANT_FROZEN, "the merchant is frozen", "merchant_id")
    return merchant
