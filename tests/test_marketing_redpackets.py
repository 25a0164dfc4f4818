"""Red packets on both databases: splits, sending, grabbing, refusals, expiry and races."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine
from tests.aio_support import run_in_own_loop

from lianjie import marketing as mkt
from lianjie.clock import ManualClock
from lianjie.committer import Committer, CommitterStopped
from lianjie.errors import DomainError, ErrorCode
from lianjie.ledger import Purpose
from lianjie.money import allocate
from marketing_world import World, make_world

WAIT_S = 60


@pytest.fixture
def world(engine: Engine, clock: ManualClock) -> World:
    return make_world(engine, clock)


@given(split=st.sampled_from(["equal", "lucky"]), shares=st.integers(1, 300),
       extra=st.integers(0, 100_000), seed=st.text(min_size=1, max_size=10))
def test_shares_are_at_least_a_fen_and_sum_to_the_total(split: str, shares: int, extra: int,
                                                        seed: str) -> None:
    amount = shares + extra
    parts = mkt.all_shares(split, seed, amount, shares)
    assert sum(parts) == amount and len(parts) == shares and min(parts) >= 1
    if split == "equal":
        assert parts == allocate(amount, [1] * shares)


def test_lucky_shares_stay_under_twice_the_mean_of_what_is_left() -> None:
    amount, shares, taken = 10_000, 10, 0
    for seq, part in enumerate(mkt.all_shares("lucky", "s", amount, shares)[:-1]):
        left = amount - taken
        assert 1 <= part <= 2 * left // (shares - seq)
        taken += part


def _group(world: World, owner: str, *members: str) -> str:
    now = world.clock.now()
    group = world.run(lambda c: mkt.do_create_group(c, now, owner, "family"))
    if members:
        world.run(lambda c: mkt.do_add_members(c, now, group.id, owner, list(members)))
    return group.id


def _send(world: World, sender: str, group: str, amount: int, shares: int,
          split: str = "lucky") -> mkt.RedPacket:
    now = world.clock.now()
    return world.run(lambda c: mkt.do_send(c, now, sender, group, amount=amount,
                                           currency_code="CNY", shares=shares,
                                           split_kind=split))


def _grab(world: World, packet: mkt.RedPacket, consumer: str) -> mkt.Grab:
    now = world.clock.now()
    return world.run(lambda c: mkt.do_grab(c, now, packet.id, consumer))


def _refused(world: World, code: ErrorCode, packet: mkt.RedPacket, consumer: str,
             watched: list[str]) -> None:
    before = [world.balance(w) for w in watched]
    escrow = world.balance(packet.id, Purpose.RED_PACKET)
    with pytest.raises(DomainError) as info:
        _grab(world, packet, consumer)
    assert info.value.code == code
    assert [world.balance(w) for w in watched] == before
    assert world.balance(packet.id, Purpose.RED_PACKET) == escrow


def test_send_and_grab_moves_escrow_to_wallets_exactly(world: World) -> None:
    alice, bob, carol = world.consumer(10_000), world.consumer(), world.consumer()
    group = _group(world, alice, bob, carol)
    packet = _send(world, alice, group, 1000, 3, "equal")
    assert world.balance(alice) == 9000
    assert world.balance(packet.id, Purpose.RED_PACKET) == 1000
    got = [_grab(world, packet, who).amount for who in (bob, carol, alice)]
    assert got == [334, 333, 333]
    assert world.balance(bob) == 334 and world.balance(alice) == 9333
    assert world.balance(packet.id, Purpose.RED_PACKET) == 0
    with world.engine.connect() as conn:
        assert mkt.require_packet(conn, packet.id).status == "emptied"
    world.check()


def test_grabbing_twice_from_outside_empty_or_expired_is_refused_and_moves_nothing(
        world: World) -> None:
    alice, bob, carol, mallory = (world.consumer(10_000), world.consumer(), world.consumer(),
                                  world.consumer())
    group = _group(world, alice, bob, carol)
    packet = _send(world, alice, group, 500, 2)
    watched = [alice, bob, carol, mallory]
    first = _grab(world, packet, bob)
    _refused(world, ErrorCode.ALREADY_GRABBED, packet, bob, watched)
    _refused(world, ErrorCode.NOT_IN_GROUP, packet, mallory, watched)
    second = _grab(world, packet, carol)
    assert first.amount + second.amount == 500
    _refused(world, ErrorCode.RED_PACKET_EMPTY, packet, alice, watched)
    late = _send(world, alice, group, 300, 3)
    world.clock.advance(timedelta(hours=24))
    _refused(world, ErrorCode.RED_PACKET_EXPIRED, late, bob, watched)
    world.check()


def test_sending_needs_money_membership_and_sane_shares(world: World) -> None:
    alice, bob = world.consumer(100), world.consumer()
    group = _group(world, alice)
    now = world.clock.now()
    cases = [(alice, group, 200, 2, ErrorCode.INSUFFICIENT_FUNDS),
             (bob, group, 50, 2, ErrorCode.GROUP_NOT_FOUND),
             (alice, group, 5, 6, ErrorCode.INVALID_SHARES),
             (alice, group, 50, 0, ErrorCode.INVALID_SHARES),
             (alice, "grp_nope", 50, 1, ErrorCode.GROUP_NOT_FOUND),
             (alice, group, 0, 1, ErrorCode.INVALID_AMOUNT)]
    for sender, grp, amount, shares, code in cases:
        with pytest.raises(DomainError) as info:
            world.run(lambda c, s=sender, g=grp, a=amount, n=shares: mkt.do_send(
                c, now, s, g, amount=a, currency_code="CNY", shares=n, split_kind="lucky"))
        assert info.value.code == code, (sender, amount, shares)
    assert world.balance(alice) == 100
    world.check()


def test_expiry_returns_what_is_left_to_the_sender_once(world: World) -> None:
    alice, bob = world.consumer(10_000), world.consumer()
    group = _group(world, alice, bob)
    packet = _send(world, alice, group, 1000, 4)
    got = _grab(world, packet, bob).amount
    assert world.run(lambda c: mkt.do_expire_packets(c, world.clock.now())) == 0
    world.clock.advance(timedelta(hours=24, seconds=1))
    assert world.run(lambda c: mkt.do_expire_packets(c, world.clock.now())) == 1
    assert world.run(lambda c: mkt.do_expire_packets(c, world.clock.now())) == 0
    assert world.balance(alice) == 10_000 - got
    assert world.balance(packet.id, Purpose.RED_PACKET) == 0
    with world.engine.connect() as conn:
        found = mkt.require_packet(conn, packet.id)
    assert found.status == "expired" and found.amount_returned == 1000 - got
    world.check()


@pytest.mark.parametrize("batched", [False, True])
def test_racing_grabs_never_overspend(world: World, committer: Committer,
                                      batched: bool) -> None:
    sender = world.consumer(1_000_000)
    takers = [world.consumer() for _ in range(40)]
    group = _group(world, sender, *takers)
    packet = _send(world, sender, group, 10_007, 25)
    batcher = mkt.GrabBatcher(committer, world.clock)
    now = world.clock.now()

    def grab(who: str) -> int | ErrorCode:
        try:
            if batched:
                return batcher.grab(mkt.GrabRequest(packet.id, who)).amount
            return committer.run(lambda c: mkt.do_grab(c, now, packet.id, who)).amount
        except DomainError as exc:
            return exc.code

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(grab, takers + takers[:10]))
    amounts = outcomes
    won = [a for a in amounts if isinstance(a, int)]
    assert len(won) == 25 and sum(won) == 10_007
    assert {a for a in amounts if not isinstance(a, int)} <= {
        ErrorCode.RED_PACKET_EMPTY, ErrorCode.ALREADY_GRABBED}
    assert sum(world.balance(t) for t in takers) == 10_007
    assert world.balance(packet.id, Purpose.RED_PACKET) == 0
    world.check()


def test_grabs_awaited_on_an_event_loop_resolve_there_with_their_refusals(
        world: World, committer: Committer) -> None:
    """``submit_async``: each batch resolves its loop's futures in one call on that loop, each
    with its own grab or refusal; a caller that stopped waiting changes nothing for the rest."""
    sender = world.consumer(1_000_000)
    takers = [world.consumer() for _ in range(12)]
    outsider = world.consumer()
    packet = _send(world, sender, _group(world, sender, *takers), 1_001, 10)
    batcher = mkt.GrabBatcher(committer, world.clock)

    async def grab_all() -> list[object]:
        gate = threading.Event()
        blocker = committer.submit(lambda c: gate.wait(WAIT_S))  # all queue up behind it
        futures = [batcher.submit_async(mkt.GrabRequest(packet.id, who))
                   for who in [*takers, takers[0], outsider]]
        futures[3].cancel()  # its caller went away: the grab still runs, answered to no one
        gate.set()
        await asyncio.wrap_future(blocker)
        loop = asyncio.get_running_loop()
        for f in futures:
            assert f.get_loop() is loop
        return list(await asyncio.gather(*futures, return_exceptions=True))

    outcomes = run_in_own_loop(grab_all(), WAIT_S)
    codes = [o.code if isinstance(o, DomainError) else o for o in outcomes]
    assert isinstance(outcomes[3], asyncio.CancelledError)
    assert codes[-2:] == [ErrorCode.ALREADY_GRABBED, ErrorCode.NOT_IN_GROUP]
    assert codes[10:12] == [ErrorCode.RED_PACKET_EMPTY] * 2
    won = [o for o in outcomes[:10] if isinstance(o, mkt.Grab)]
    assert [g.consumer_id for g in won] == takers[:3] + takers[4:10]
    assert sum(world.balance(t) for t in takers) == 1_001  # the cancelled caller's share too
    assert world.balance(packet.id, Purpose.RED_PACKET) == 0
    world.check()


def test_grabs_handed_over_together_resolve_once_all_are_durable_in_order(
        world: World, committer: Committer) -> None:
    """``submit_many``: one future per call, resolved with every grab's outcome in the order
    handed over (refusals as their exceptions), however the calls and single grabs around them
    were cut into units; once the committer has stopped, a call raises and queues nothing."""
    sender = world.consumer(1_000_000)
    takers = [world.consumer() for _ in range(12)]
    outsider = world.consumer()
    packet = _send(world, sender, _group(world, sender, *takers), 1_001, 10)
    batcher = mkt.GrabBatcher(committer, world.clock)
    gate = threading.Event()
    blocker = committer.submit(lambda c: gate.wait(WAIT_S))  # all queue up behind it
    first = batcher.submit_many([mkt.GrabRequest(packet.id, t) for t in takers[:4]])
    single = batcher.submit(mkt.GrabRequest(packet.id, takers[4]))
    second = batcher.submit_many([mkt.GrabRequest(packet.id, who) for who in
                                  [*takers[5:], takers[0], outsider]])
    assert not first.done() and not second.done()
    gate.set()
    blocker.result(WAIT_S)
    got = [*first.result(WAIT_S), single.result(WAIT_S), *second.result(WAIT_S)]
    codes = [o.code if isinstance(o, DomainError) else o for o in got]
    assert all(isinstance(o, mkt.Grab) for o in got[:10])
    assert [o.consumer_id for o in got[:10]] == takers[:10]
    assert codes[10:] == [ErrorCode.RED_PACKET_EMPTY] * 2 + [ErrorCode.ALREADY_GRABBED,
                                                              ErrorCode.NOT_IN_GROUP]
    assert sum(o.amount for o in got[:10]) == 1_001
    assert sum(world.balance(t) for t in takers) == 1_001
    assert world.balance(packet.id, Purpose.RED_PACKET) == 0
    committer.stop()
    with pytest.raises(CommitterStopped):
        batcher.submit_many([mkt.GrabRequest(packet.id, outsider)])
    assert batcher._pending == []
    world.check()


class _Tagged:
    """An ``Around`` that records each unit's tags and answers with the grab's amount."""

    def __init__(self) -> None:
        self.units: list[list[tuple[str, int]]] = []

    def same(self, tag: tuple[str, int]) -> str:
        return tag[0]

    def before(self, conn: Connection, tags: list[tuple[str, int]]) -> list[object]:
        self.units.append(list(tags))
        return [None] * len(tags)

    def after(self, conn: Connection, now: object, tags: list[tuple[str, int]],
              outcomes: list[mkt.Grab | DomainError]) -> list[object]:
        return [o if isinstance(o, DomainError) else ("amount", o.amount) for o in outcomes]


def test_batched_requests_with_one_key_never_share_a_unit(world: World,
                                                           committer: Committer) -> None:
    """Requests queued together are split so that two with the same ``Around.same`` key run
    in successive units, in order; the others share the first unit."""
    sender = world.consumer(1_000_000)
    takers = [world.consumer() for _ in range(5)]
    packet = _send(world, sender, _group(world, sender, *takers), 500, 5)
    around = _Tagged()
    batcher = mkt.GrabBatcher(committer, world.clock, around)
    gate = threading.Event()
    blocker = committer.submit(lambda c: gate.wait(WAIT_S))  # hold the writer: all queue up
    futures = [batcher.submit(mkt.GrabRequest(packet.id, takers[0]), ("k", 0)),
               batcher.submit(mkt.GrabRequest(packet.id, takers[0]), ("k", 1)),
               *(batcher.submit(mkt.GrabRequest(packet.id, t), (t, 0)) for t in takers[1:]),
               batcher.submit(mkt.GrabRequest(packet.id, takers[0]), ("k", 2)),
               batcher.submit(mkt.GrabRequest(packet.id, takers[1]))]  # untagged
    gate.set()
    blocker.result(WAIT_S)
    outcomes = []
    for f in futures:
        try:
            outcomes.append(f.result(WAIT_S))
        except DomainError as exc:
            outcomes.append(exc.code)
    assert [u[0] for u in around.units] == [("k", 0), ("k", 1), ("k", 2)]
    assert len(around.units[0]) == 5 and around.units[1:] == [[("k", 1)], [("k", 2)]]
    assert outcomes[1] == outcomes[6] == outcomes[7] == ErrorCode.ALREADY_GRABBED
    got = [o for o in outcomes if isinstance(o, tuple)]
    assert len(got) == 5 and sum(a for _, a in got) == 500
    world.check()


def test_per_person_limit_holds_across_a_campaign_within_one_batch(world: World) -> None:
    from lianjie import payments as pay
    now = world.clock.now()

    def setup(conn: Connection) -> list[mkt.RedPacket]:
        campaign = mkt.do_create_campaign(conn, now, name="scan", funder_id=pay.PLATFORM_ID,
                                          budget=1000, currency_code="CNY", starts_at=now,
                                          ends_at=now + timedelta(days=1))
        return [mkt.do_create_campaign_packet(conn, now, campaign.id, amount=300, shares=3,
                                              split_kind="equal") for _ in range(2)]

    first, second = world.run(setup)
    walker, other = world.consumer(), world.consumer()
    outcomes = world.run(lambda c: mkt.do_grab_many(c, now, [
        mkt.GrabRequest(first.id, walker), mkt.GrabRequest(second.id, walker),
        mkt.GrabRequest(second.id, other)]))
    assert isinstance(outcomes[0], mkt.Grab) and isinstance(outcomes[2], mkt.Grab)
    assert isinstance(outcomes[1], DomainError)
    assert outcomes[1].code == ErrorCode.PER_PERSON_LIMIT_REACHED
    assert world.balance(walker) == 100 and world.balance(other) == 100
    world.check()
