"""E-receipts: a paid order with the inclusion proof of its ledger entry under a signed head.

Anyone holding the receipt and the platform's public key can check it offline
(``lianjie-verify``) or ask the API (``POST /v1/receipts/verify``). A payment can be receipted
once its business day is sealed; before that the answer is ``not_logged_yet``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from lianjie.clearing import log, verify
from lianjie.clearing.signing import Signer
from lianjie.errors import DomainError, ErrorCode
from lianjie.payments import Order


def receipt_for(conn: Connection, order: Order) -> dict[str, Any]:
    if order.entry_id is None or order.paid_at is None:
        raise DomainError(ErrorCode.ORDER_NOT_PAID, f"order {order.id} is not paid", "id")
    proof = log.inclusion_proof(conn, order.entry_id)
    if proof is None:
        raise DomainError(ErrorCode.NOT_LOGGED_YET,
                          "the payment's business day is not sealed yet", "id")
    return {"object": "e_receipt",
            "payment": {"id": order.id, "merchant_id": order.merchant_id,
                        "out_trade_no": order.out_trade_no, "amount": order.amount,
                        "currency": order.currency, "description": order.description,
                        "paid_at": order.paid_at.isoformat()},
            "entry_id": f"txf_{order.entry_id}", "proof": proof}


def check_receipt(receipt: Any, signer: Signer) -> dict[str, Any]:
    """Verify a receipt against the platform key; refusals carry stable codes."""
    key = verify.load_public_key(signer.public_pem)
    try:
        if not isinstance(receipt, dict):
            raise verify.VerifyError("malformed", "a receipt is a JSON object")
        return verify.verify_receipt(receipt, key)
    except verify.VerifyError as exc:
        code = {"invalid_signature": ErrorCode.INVALID_SIGNATURE,
                "malformed": ErrorCode.INVALID_REQUEST}.get(exc.code, ErrorCode.INVALID_PROOF)
        raise DomainError(code, str(exc), "receipt") from exc
