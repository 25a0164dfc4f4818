"""A first worked example: a top-up, a payment and a refused overdraft, on both databases."""

from sqlalchemy import Engine

from lianjie import ledger as L
from lianjie.clock import ManualClock
from lianjie.db import writer
from lianjie.errors import ErrorCode

WALLET = L.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS


def test_topup_pay_and_overdraft(engine: Engine, clock: ManualClock) -> None:
    with writer(engine) as c:
        bank = L.open_account(c, clock.now(), "ins_bank", L.Purpose.INSTITUTION_SETTLEMENT)
        alice = L.open_account(c, clock.now(), "cus_alice", L.Purpose.WALLET, flags=WALLET)
        shop = L.open_account(c, clock.now(), "mch_shop", L.Purpose.MERCHANT_PENDING)
        results = L.create_entries(c, clock.now(), [
            L.Entry("topup-1", (L.Leg(bank.id, alice.id, 10_000),)),
            L.Entry("pay-1", (L.Leg(alice.id, shop.id, 2_500),)),
            L.Entry("pay-2", (L.Leg(alice.id, shop.id, 7_501),)),
        ])
        assert [r.error for r in results] == [None, None, ErrorCode.INSUFFICIENT_FUNDS]
    with writer(engine) as c:
        assert L.require_account(c, alice.id).balance == 7_500
        assert L.require_account(c, bank.id).balance == -10_000
        assert L.require_account(c, shop.id).balance == 2_500
        assert L.verify(c) == []
