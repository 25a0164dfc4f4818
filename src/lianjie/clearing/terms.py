"""Per-party clearing settings an operator sets: a merchant's settlement delay (T+0, T+1, T+n)
and paying institution, and an institution's net debit cap. One ``do_*`` function each."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from lianjie import events
from lianjie.clearing import schema as s
from lianjie.clearing.config import ClearingConfig
from lianjie.errors import DomainError, ErrorCode
from lianjie.money import AMOUNT_MAX
from lianjie.payments import PartyKind, require_party


def _upsert(conn: Connection, table: Any, key: str, key_value: str, values: dict[str, Any]
            ) -> None:
    found = conn.execute(select(table.c[key]).where(table.c[key] == key_value)).first()
    if found is None:
        conn.execute(table.insert().values({key: key_value, **values}))
    else:
        conn.execute(table.update().where(table.c[key] == key_value).values(values))


def do_set_settlement_terms(conn: Connection, now: datetime, cfg: ClearingConfig,
                            merchant_id: str, delay_days: int,
                            payout_institution_id: str | None) -> dict[str, Any]:
    require_party(conn, merchant_id, PartyKind.MERCHANT, "merchant_id")
    if isinstance(delay_days, bool) or not isinstance(delay_days, int) or \
            not 0 <= delay_days <= cfg.settlement_delay_days_max:
        raise DomainError(ErrorCode.INVALID_REQUEST, "delay_days must be from 0 to "
                          f"{cfg.settlement_delay_days_max}", "delay_days")
    if payout_institution_id is not None:
        require_party(conn, payout_institution_id, PartyKind.INSTITUTION,
                      "payout_institution_id")
    _upsert(conn, s.terms, "merchant_id", merchant_id, {
        "delay_days": delay_days, "payout_institution_id": payout_institution_id,
        "updated_at": now})
    out = {"object": "settlement_terms", "merchant_id": merchant_id, "delay_days": delay_days,
           "payout_institution_id": payout_institution_id}
    events.emit(conn, now, "settlement_terms.updated", merchant_id, out)
    return out


def do_set_net_debit_cap(conn: Connection, now: datetime, institution_id: str,
                         net_debit_cap: int) -> dict[str, Any]:
    require_party(conn, institution_id, PartyKind.INSTITUTION, "institution_id")
    if isinstance(net_debit_cap, bool) or not isinstance(net_debit_cap, int) or \
            not 0 <= net_debit_cap <= AMOUNT_MAX:
        raise DomainError(ErrorCode.INVALID_AMOUNT, f"net_debit_cap must be from 0 to "
                          f"{AMOUNT_MAX}", "net_debit_cap")
    _upsert(conn, s.caps, "institution_id", institution_id, {"net_debit_cap": net_debit_cap,
                                                             "updated_at": now})
    out = {"object": "net_debit_cap", "institution_id": institution_id,
           "net_debit_cap": net_debit_cap}
    events.emit(conn, now, "net_debit_cap.updated", institution_id, out)
    return out
