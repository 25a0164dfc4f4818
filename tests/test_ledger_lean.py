"""The ledger's lean paths compute exactly what the general ones do.

- ``Entry.fingerprint`` spells the text of ``repr((int(kind), code, [(debit, credit, amount),
  ...], pending_id, amounts, timeout_s, reverses_id, memo))`` with an f-string; the digest is
  stored, so the two must agree byte for byte for any content, odd types included.
- ``batch._post_one_leg`` is ``batch._apply_legs(..., pending=False)`` for a one-leg entry: on
  twin working copies of the same accounts, the two must return the same outcome and leave the
  same counters and postings, at the limits and counter bounds too.
- ``batch._GcPause`` holds the garbage collector off while batches run and turns it back on
  after the last one, even when it fails, and only if it was on.
"""

from __future__ import annotations

import gc
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lianjie.ledger import batch as B
from lianjie.ledger.model import COUNTER_MAX, Entry, EntryKind, Leg
from lianjie.money import AMOUNT_MAX


def _reference_fingerprint(e: Entry) -> bytes:
    text = repr((int(e.kind), e.code, [(leg.debit_account_id, leg.credit_account_id,
                 leg.amount) for leg in e.legs], e.pending_id, e.amounts, e.timeout_s,
                 e.reverses_id, e.memo))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


_ints = st.one_of(st.integers(-3, 3), st.integers(), st.booleans())
_legs = st.lists(st.builds(Leg, _ints, _ints, _ints), max_size=4).map(tuple)
_texts = st.text(max_size=12)


@given(st.builds(Entry, key=_texts, legs=_legs, code=_texts,
                 kind=st.sampled_from([*EntryKind, 0, 1, True]),
                 pending_id=st.none() | _ints,
                 amounts=st.none() | st.lists(_ints, max_size=3).map(tuple) | st.lists(_ints),
                 timeout_s=_ints, reverses_id=st.none() | _ints, memo=st.none() | _texts,
                 linked=st.booleans()))
def test_fingerprint_is_the_repr_digest(e: Entry) -> None:
    assert e.fingerprint() == _reference_fingerprint(e)


def test_fingerprint_is_unchanged_for_a_stored_entry() -> None:
    # A digest as stored by earlier versions: replays of old keys must still match.
    e = Entry(key="k", legs=(Leg(1, 2, 500),), code="payment", memo="备注")
    text = "(0, 'payment', [(1, 2, 500)], None, None, 0, None, '备注')"
    assert e.fingerprint() == hashlib.blake2b(text.encode(), digest_size=16).digest()


_NEAR_MAX = st.integers(COUNTER_MAX - AMOUNT_MAX, COUNTER_MAX)
_counter = st.one_of(st.integers(0, 1000), _NEAR_MAX)
# Mostly accounts that let the leg reach the counter and limit checks, some that refuse it.
_account = st.tuples(st.sampled_from(["CNY"] * 6 + ["USD"]), st.integers(0, 3),
                     st.sampled_from(["open"] * 8 + ["frozen", "closed"]),
                     _counter, _counter, _counter, _counter, st.integers(0, 5))
ACCOUNT_IDS = (1, 2, 3)


def _twin_batches(accounts: list[tuple[Any, ...]]) -> tuple[B._Batch, B._Batch]:
    def batch() -> B._Batch:
        accts = {i: B._Acct((i, *row)) for i, row in zip(ACCOUNT_IDS, accounts, strict=True)}
        return B._Batch(1_700_000_000_000_000, accts, {}, set(), {}, range(7, 8))
    return batch(), batch()


def _state(b: B._Batch) -> object:
    return ({i: a.snapshot() for i, a in b.accts.items()}, b.postings)


@settings(max_examples=400)
@given(accounts=st.lists(_account, min_size=3, max_size=3),
       pair=st.permutations((*ACCOUNT_IDS, *ACCOUNT_IDS, *ACCOUNT_IDS, 99)).map(lambda p: p[:2]),
       amount=st.one_of(st.integers(1, 1000), st.integers(1, AMOUNT_MAX)),
       previous=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2),
                                   st.integers(1, 1000)), max_size=3))
def test_one_leg_lean_path_equals_the_general_path(
        accounts: list[tuple[Any, ...]], pair: tuple[int, int], amount: int,
        previous: list[tuple[int, int, int]]) -> None:
    debit, credit = pair
    if debit == credit:  # refused by the shape check before either path runs
        return
    lean, general = _twin_batches(accounts)
    # Earlier entries of the same batch, through the general path on both sides, so the
    # working copies are dirty and carry sequence numbers, as in the middle of a batch.
    for d, c, a in previous:
        if d != c:
            for b in (lean, general):
                B._apply_legs(b, (Leg(ACCOUNT_IDS[d], ACCOUNT_IDS[c], a),), 5, pending=False)
    assert _state(lean) == _state(general)
    leg = Leg(debit, credit, amount)
    outcome = B._post_one_leg(lean, leg, 7)
    assert outcome == B._apply_legs(general, (leg,), 7, pending=False)
    assert _state(lean) == _state(general)


def test_gc_pause_nests_and_restores_the_collector() -> None:
    pause = B._GcPause()
    assert gc.isenabled()
    try:
        with pause:
            assert not gc.isenabled()
            with pause:  # a second batch (another thread's) inside the first
                assert not gc.isenabled()
            assert not gc.isenabled()  # the outer batch still runs
        assert gc.isenabled()
        gc.disable()  # an application that runs without the collector keeps it off
        with pause:
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_gc_pause_is_lifted_when_the_batch_fails() -> None:
    pause = B._GcPause()
    with pytest.raises(RuntimeError), pause:
        raise RuntimeError("the batch failed")
    assert gc.isenabled()
