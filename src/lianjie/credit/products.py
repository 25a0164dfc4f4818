"""Loan products, their funders and shares, and funders' exposure limits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from lianjie import events
from lianjie.credit import schedule
from lianjie.credit.schema import funder_limits, product_funders, products
from lianjie.errors import DomainError, ErrorCode
from lianjie.ids import new_id
from lianjie.money import AMOUNT_MAX, BPS_DENOMINATOR, check_amount, currency
from lianjie.payments import PLATFORM_ID, PartyKind, require_party

FUNDERS_PER_PRODUCT_MAX = 4
WATERFALL_PARTS = ("penalty", "fee", "interest", "principal")
DEFAULT_WATERFALL = ",".join(WATERFALL_PARTS)
RATE_BPS_MAX = 10_000  # 100% a year
PRINCIPAL_MAX = 10**11  # keeps principal * rate within a 64-bit integer in SQL accrual


@dataclass(frozen=True, slots=True)
class Funder:
    funder_id: str
    share_bps: int


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    currency: str
    annual_rate_bps: int
    penalty_rate_bps: int
    method: str
    period: str
    term_count: int
    amount_min: int
    amount_max: int
    history_days_min: int
    late_fee: int
    writeoff_dpd: int
    receipt_share_bps: int
    waterfall: tuple[str, ...]
    limit_policy: str
    offer_ttl_s: int
    funders: tuple[Funder, ...]


def _bad(message: str, param: str) -> DomainError:
    return DomainError(ErrorCode.INVALID_PRODUCT, message, param)


def _int_in(value: object, low: int, high: int, param: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(f"{param} must be an integer from {low} to {high}", param)
    return value


def check_funders(conn: Connection, funders: list[tuple[str, int]]) -> tuple[Funder, ...]:
    if not funders or len(funders) > FUNDERS_PER_PRODUCT_MAX:
        raise _bad(f"a product has 1 to {FUNDERS_PER_PRODUCT_MAX} funders", "funders")
    seen = set()
    for funder_id, share in funders:
        party = require_party(conn, funder_id, None, "funders")
        if party.kind not in (PartyKind.PLATFORM, PartyKind.INSTITUTION) or funder_id in seen:
            raise _bad("funders are the platform or institutions, each once", "funders")
        seen.add(funder_id)
        _int_in(share, 1, BPS_DENOMINATOR, "funders.share_bps")
    if sum(s for _, s in funders) != BPS_DENOMINATOR:
        raise _bad("funder shares must add up to 10000 bps", "funders")
    return tuple(Funder(f, s) for f, s in funders)


def do_create_product(conn: Connection, now: datetime, *, name: str, funders: list[tuple[str, int]],
                      currency_code: str = "CNY", annual_rate_bps: int = 1800,
                      penalty_rate_bps: int = 2700, method: str = "annuity",
                      period: str = "monthly", term_count: int = 6, amount_min: int = 100_00,
                      amount_max: int = 500_000_00, history_days_min: int = 90,
                      late_fee: int = 0, writeoff_dpd: int = 90, receipt_share_bps: int = 0,
                      waterfall: str = DEFAULT_WATERFALL, limit_policy: str = "refuse",
                      offer_ttl_s: int = 7 * 86_400) -> Product:
    currency(currency_code)
    if not isinstance(name, str) or not 0 < len(name.strip()) <= 200:
        raise _bad("name must be 1 to 200 characters", "name")
    if method not in schedule.METHODS:
        raise _bad(f"method must be one of {schedule.METHODS}", "method")
    if period not in schedule.PERIODS:
        raise _bad(f"period must be one of {schedule.PERIODS}", "period")
    parts = tuple(waterfall.split(",")) if isinstance(waterfall, str) else ()
    if sorted(parts) != sorted(WATERFALL_PARTS):
        raise _bad(f"waterfall orders each of {WATERFALL_PARTS} once", "waterfall")
    if limit_policy not in ("refuse", "reroute"):
        raise _bad("limit_policy is refuse or reroute", "limit_policy")
    row = dict(
        id=new_id("prd"), name=name.strip(), currency=currency_code,
        annual_rate_bps=_int_in(annual_rate_bps, 0, RATE_BPS_MAX, "annual_rate_bps"),
        penalty_rate_bps=_int_in(penalty_rate_bps, 0, RATE_BPS_MAX, "penalty_rate_bps"),
        method=method, period=period,
        term_count=_int_in(term_count, 1, schedule.TERM_COUNT_MAX, "term_count"),
        amount_min=_int_in(amount_min, 1, PRINCIPAL_MAX, "amount_min"),
        amount_max=_int_in(amount_max, 1, PRINCIPAL_MAX, "amount_max"),
        history_days_min=_int_in(history_days_min, 0, 3650, "history_days_min"),
        late_fee=_int_in(late_fee, 0, PRINCIPAL_MAX, "late_fee"),
        writeoff_dpd=_int_in(writeoff_dpd, 1, 3650, "writeoff_dpd"),
        receipt_share_bps=_int_in(receipt_share_bps, 0, BPS_DENOMINATOR, "receipt_share_bps"),
        waterfall=",".join(parts), limit_policy=limit_policy,
        offer_ttl_s=_int_in(offer_ttl_s, 60, 90 * 86_400, "offer_ttl_s"), created_at=now)
    if row["amount_min"] > row["amount_max"]:  # type: ignore[operator]
        raise _bad("amount_min is above amount_max", "amount_min")
    checked = check_funders(conn, funders)
    conn.execute(products.insert().values(**row))
    conn.execute(product_funders.insert(), [
        {"product_id": row["id"], "seq": i, "funder_id": f.funder_id, "share_bps": f.share_bps}
        for i, f in enumerate(checked)])
    events.emit(conn, now, "credit.product.created", PLATFORM_ID, {"id": row["id"]})
    return require_product(conn, str(row["id"]))


def get_product(conn: Connection, product_id: str) -> Product | None:
    row = conn.execute(select(products).where(products.c.id == product_id)).first()
    if row is None:
        return None
    funders = conn.execute(select(product_funders).where(
        product_funders.c.product_id == product_id).order_by(product_funders.c.seq)).all()
    m = row._mapping
    return Product(
        id=m["id"], name=m["name"], currency=m["currency"],
        annual_rate_bps=m["annual_rate_bps"], penalty_rate_bps=m["penalty_rate_bps"],
        method=m["method"], period=m["period"], term_count=m["term_count"],
        amount_min=m["amount_min"], amount_max=m["amount_max"],
        history_days_min=m["history_days_min"], late_fee=m["late_fee"],
        writeoff_dpd=m["writeoff_dpd"], receipt_share_bps=m["receipt_share_bps"],
        waterfall=tuple(m["waterfall"].split(",")), limit_policy=m["limit_policy"],
        offer_ttl_s=m["offer_ttl_s"],
        funders=tuple(Funder(f.funder_id, f.share_bps) for f in funders))


def require_product(conn: Connection, product_id: str) -> Product:
    found = get_product(conn, product_id) if isinstance(product_id, str) else None
    if found is None:
        raise DomainError(ErrorCode.PRODUCT_NOT_FOUND, f"no product {product_id!r}",
                          "product_id")
    return found


def list_products(conn: Connection) -> list[Product]:
    ids = conn.execute(select(products.c.id).order_by(products.c.id)).scalars().all()
    return [require_product(conn, i) for i in ids]


def do_set_funder_limit(conn: Connection, now: datetime, funder_id: str, currency_code: str,
                        exposure_max: int) -> dict[str, int | str]:
    """Set a funder's exposure limit (outstanding principal it may fund) in a currency."""
    party = require_party(conn, funder_id, None, "funder_id")
    if party.kind not in (PartyKind.PLATFORM, PartyKind.INSTITUTION):
        raise _bad("funders are the platform or institutions", "funder_id")
    currency(currency_code)
    check_amount(exposure_max, "exposure_max", allow_zero=True)
    assert exposure_max <= AMOUNT_MAX
    t = funder_limits
    found = conn.execute(select(t).where(t.c.funder_id == funder_id,
                                         t.c.currency == currency_code)).first()
    if found is None:
        conn.execute(t.insert().values(funder_id=funder_id, currency=currency_code,
                                       exposure_max=exposure_max, exposure_used=0))
    else:
        conn.execute(t.update().where(t.c.funder_id == funder_id, t.c.currency == currency_code)
                     .values(exposure_max=exposure_max))
    events.emit(conn, now, "credit.funder_limit.set", funder_id,
                {"funder_id": funder_id, "currency": currency_code,
                 "exposure_max": exposure_max})
    return funder_limit(conn, funder_id, currency_code)


def funder_limit(conn: Connection, funder_id: str, currency_code: str) -> dict[str, int | str]:
    t = funder_limits
    row = conn.execute(select(t).where(t.c.funder_id == funder_id,
                                       t.c.currency == currency_code)).first()
    if row is None:
        return {"funder_id": funder_id, "currency": currency_code, "exposure_max": -1,
                "exposure_used": 0}
    return {"funder_id": funder_id, "currency": currency_code,
            "exposure_max": row.exposure_max, "exposure_used": row.exposure_used}
