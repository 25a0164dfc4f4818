"""JSON shapes of API objects. Every object has an ``object`` field and a prefixed ``id``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lianjie.ledger import Account, EntryRecord, Posting
from lianjie.payments import (
    Delivery,
    Order,
    Party,
    PaymentsConfig,
    QrCode,
    Refund,
    Store,
    WalletBalance,
    WalletOperation,
    order_content,
    static_content,
)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def party(p: Party) -> dict[str, Any]:
    out: dict[str, Any] = {"id": p.id, "object": p.kind.value, "name": p.name,
                           "status": p.status, "created_at": _ts(p.created_at)}
    if p.kind.value == "merchant":
        out.update(kyc_status=p.kyc_status.value, service_provider_id=p.parent_id,
                   business_type=p.business_type, fee_rate_bps=p.fee_rate_bps,
                   webhook_url=p.webhook_url)
    if p.kind.value == "service_provider":
        out.update(commission_share_bps=p.commission_share_bps, webhook_url=p.webhook_url)
    return out


def order(o: Order, cfg: PaymentsConfig) -> dict[str, Any]:
    return {
        "id": o.id, "object": "payment_order", "merchant_id": o.merchant_id,
        "service_provider_id": o.sp_id, "store_id": o.store_id, "qr_code_id": o.qr_code_id,
        "out_trade_no": o.out_trade_no, "amount": o.amount, "currency": o.currency,
        "description": o.description, "status": o.status, "expires_at": _ts(o.expires_at),
        "created_at": _ts(o.created_at), "paid_at": _ts(o.paid_at),
        "closed_at": _ts(o.closed_at), "payer_id": o.payer_id,
        "entry_id": None if o.entry_id is None else f"txf_{o.entry_id}",
        "fee_amount": o.fee_amount, "commission_amount": o.commission_amount,
        "refunded_amount": o.refunded_amount,
        "qr_code": {"content": order_content(cfg.base_url, o.id),
                    "png_url": f"/v1/orders/{o.id}/qr.png",
                    "svg_url": f"/v1/orders/{o.id}/qr.svg"},
    }


def refund(r: Refund) -> dict[str, Any]:
    return {"id": r.id, "object": "refund", "order_id": r.order_id,
            "merchant_id": r.merchant_id, "out_refund_no": r.out_refund_no, "amount": r.amount,
            "currency": r.currency, "fee_refunded": r.fee_refunded,
            "commission_refunded": r.commission_refunded, "reason": r.reason,
            "status": r.status, "entry_id": f"txf_{r.entry_id}", "created_at": _ts(r.created_at)}


def store(s: Store) -> dict[str, Any]:
    return {"id": s.id, "object": "store", "merchant_id": s.merchant_id, "name": s.name,
            "created_at": _ts(s.created_at)}


def qr_code(q: QrCode, cfg: PaymentsConfig) -> dict[str, Any]:
    return {"id": q.id, "object": "qr_code", "merchant_id": q.merchant_id,
            "store_id": q.store_id, "description": q.description, "currency": q.currency,
            "active": q.active, "content": static_content(cfg.base_url, q.id),
            "png_url": f"/v1/qr_codes/{q.id}/qr.png", "svg_url": f"/v1/qr_codes/{q.id}/qr.svg",
            "created_at": _ts(q.created_at)}


def wallet_operation(w: WalletOperation) -> dict[str, Any]:
    return {"id": w.id, "object": "wallet_operation", "kind": w.kind,
            "consumer_id": w.consumer_id, "counterparty_id": w.counterparty_id,
            "amount": w.amount, "currency": w.currency, "entry_id": f"txf_{w.entry_id}",
            "note": w.note, "created_at": _ts(w.created_at)}


def wallet(b: WalletBalance) -> dict[str, Any]:
    return {"object": "wallet", "consumer_id": b.consumer_id, "currency": b.currency,
            "balance": b.balance, "available": b.available, "pending": b.pending}


def account(a: Account) -> dict[str, Any]:
    return {"id": f"acc_{a.id}", "object": "account", "owner_id": a.owner_id,
            "purpose": a.purpose, "currency": a.currency, "status": a.status.value,
            "flags": int(a.flags), "balance": a.balance, "available": a.available,
            "debits_posted": a.debits_posted, "credits_posted": a.credits_posted,
            "debits_pending": a.debits_pending, "credits_pending": a.credits_pending,
            "created_at": _ts(a.created_at)}


def posting(p: Posting) -> dict[str, Any]:
    return {"object": "posting", "entry_id": f"txf_{p.entry_id}", "leg": p.leg_no,
            "account_id": f"acc_{p.account_id}", "seq": p.account_seq, "amount": p.amount,
            "balance_after": p.balance_after, "created_at": _ts(p.created_at)}


def entry(e: EntryRecord) -> dict[str, Any]:
    return {"id": f"txf_{e.id}", "object": "ledger_entry", "key": e.key, "code": e.code,
            "kind": e.kind.name.lower(), "memo": e.memo,
            "reverses_id": None if e.reverses_id is None else f"txf_{e.reverses_id}",
            "created_at": _ts(e.created_at), "postings": [posting(p) for p in e.postings]}


def delivery(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "object": "webhook_delivery", "event_id": d.event_id,
            "event_type": d.event_type, "party_id": d.party_id, "url": d.url,
            "status": d.status, "attempts": d.attempts,
            "next_attempt_at": _ts(d.next_attempt_at), "last_error": d.last_error,
            "delivered_at": _ts(d.delivered_at), "created_at": _ts(d.created_at)}


def page(items: list[dict[str, Any]], limit: int, cursor_field: str = "id") -> dict[str, Any]:
    """A cursor page, Stripe's list shape: pass ``next_cursor`` as ``after`` for the next."""
    has_more = len(items) > limit
    items = items[:limit]
    return {"object": "list", "data": items, "has_more": has_more,
            "next_cursor": items[-1][cursor_field] if has_more and items else None}
