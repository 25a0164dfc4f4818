"""Features of a money-moving event, computed as it arrives from an in-process state.

The state is a fold of the decision log (``risk_decisions``): every decided event, allowed,
reviewed or blocked, is applied once, in ``seq`` order. So it survives a restart (rebuilt from
the last ``WINDOW_LONG_S`` of the log) and stays in step across processes (each reads the log
rows past the last ``seq`` it applied before deciding, and comes back for a lower ``seq`` that
was missing then: on PostgreSQL rows commit out of ``seq`` order). Decisions run on the single
writer thread of a process, so the state needs no locks. A process folds each event as it decides it
(an attempt counts even when the payment then fails, say for insufficient funds: attempts are
what card testers and account takers make many of); such a failed attempt leaves no log row,
so a restarted process does not count it: the one difference between live and rebuilt state.

Shapes, chosen for a constant cost per event:
- velocity per key (consumer, merchant, device, IP, service provider): exact running counts and
  sums over the last minute and hour (the hour's events in flat arrays), hour buckets for 24
  hours and day buckets for 7 days (so those two windows are exact to the bucket, not the
  second), all in one object per key whose arrays the garbage collector does not traverse;
- distinct counts from maps of ``other -> last seen``, pruned lazily;
- relationships: who sent money to whom (loops), the accounts seen on a device or an IP, and a
  union-find over accounts and devices for the size of a device-linked group.

Features are plain ints and floats (and one string, the merchant category) named in
``FEATURES``; rules may use only these names and a model is trained on ``MODEL_FEATURES``.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right, insort
from collections import deque
from dataclasses import dataclass
from datetime import datetime

WINDOW_LONG_S = 7 * 86_400
SMALL_AMOUNT_MAX = 100  # fen: a "probe" amount, as card testers use
DISTINCT_PRUNE_MIN = 64
LOOP_SCAN_MAX = 200

KINDS = ("payment", "p2p", "withdrawal", "red_packet_grab", "loan_application", "coupon_claim")
CATEGORIES = ("street_food", "convenience_store", "market_stall", "restaurant", "cafe",
              "bakery", "fruit_shop", "pharmacy", "hair_salon", "repair_shop", "clothing",
              "online_shop", "other")


@dataclass(frozen=True, slots=True)
class Event:
    """What is about to happen to money. ``actor_id`` pays or asks; ``counterparty_id`` is paid
    (a merchant, a P2P recipient, an institution, a red packet's sender, a lender)."""

    kind: str
    subject_id: str
    actor_id: str
    amount: int
    currency: str
    counterparty_id: str | None = None
    sp_id: str | None = None
    device_id: str | None = None
    client_ip: str | None = None
    category: str | None = None
    actor_since: datetime | None = None
    counterparty_since: datetime | None = None


VELOCITY_KEYS = ("c", "m", "d", "i", "s")  # consumer, merchant, device, IP, SP
FEATURES: tuple[str, ...] = (
    "amount", "kind_code", "is_payment", "is_p2p", "is_withdrawal", "hour",
    *(f"{k}_{m}_{w}" for k in VELOCITY_KEYS for m in ("count", "sum")
      for w in ("1m", "1h", "24h", "7d")),
    "c_distinct_counterparties_24h", "m_distinct_payers_24h", "m_new_payers_today",
    "m_small_count_1h", "d_accounts", "i_accounts_24h", "device_group_size",
    "amount_vs_consumer_avg", "amount_vs_merchant_avg", "first_pair", "new_device",
    "account_age_days", "counterparty_age_days", "loop_back", "loop_ring", "category_code",
    "actor_blocked", "counterparty_blocked", "device_blocked", "ip_blocked", "actor_allowed",
)
# Velocity feature names per key, in ``Velocity.window``'s order.
_WINDOW_NAMES = tuple(tuple(f"{k}_{n}" for n in (
    "count_1m", "count_1h", "count_24h", "count_7d", "sum_1m", "sum_1h", "sum_24h", "sum_7d"))
    for k in VELOCITY_KEYS)
# What ``FeatureState.features`` fills in, in the order it gives them.
_BLANK: dict[str, float | int | str] = dict.fromkeys((
    "amount", "kind", "category", "kind_code", "is_payment", "is_p2p", "is_withdrawal", "hour",
    "category_code", *(n for names in _WINDOW_NAMES for n in names),
    "amount_vs_consumer_avg", "amount_vs_merchant_avg", "first_pair", "new_device",
    "account_age_days", "counterparty_age_days", "c_distinct_counterparties_24h",
    "m_distinct_payers_24h", "m_new_payers_today", "m_small_count_1h", "d_accounts",
    "i_accounts_24h", "device_group_size", "loop_back", "loop_ring"), 0)
STRING_FEATURES = ("category", "kind")
ALL_NAMES = frozenset(FEATURES) | frozenset(STRING_FEATURES)
# List memberships are facts an operator sets, not patterns to learn: the model leaves them out.
MODEL_FEATURES: tuple[str, ...] = tuple(f for f in FEATURES if not f.endswith(("_blocked",
                                                                            "_allowed")))


_NEVER = -(1 << 62)
# A key's hour or day buckets in one int64 array: the running count and sum, the bucket index
# the buckets were expired to (no bucket older than its window is held, so a read in the same
# or an earlier bucket has nothing to expire), then (bucket index, count, sum) per bucket,
# oldest first.
_B_COUNT, _B_TOTAL, _B_EXPIRED, _B_FIRST = 0, 1, 2, 3
_EMPTY_BUCKETS = array("q", (0, 0, _NEVER))
_EMPTY_TIMES = array("d")
_EMPTY_AMOUNTS = array("q")
# Events of the last hour are dropped from the front of a key's arrays by moving ``head``; the
# dropped ones are cut off once they are at least this many and half the arrays.
_COMPACT_MIN = 32


def _expire(b: array[int], size: int, keep: int, t: float) -> None:
    index = int(t // size)
    if index <= b[_B_EXPIRED]:
        return
    b[_B_EXPIRED] = index
    first = index - keep + 1
    at, end = _B_FIRST, len(b)
    while at < end and b[at] < first:
        b[_B_COUNT] -= b[at + 1]
        b[_B_TOTAL] -= b[at + 2]
        at += 3
    if at > _B_FIRST:
        del b[_B_FIRST:at]


def _bucket_add(b: array[int], size: int, keep: int, t: float, amount: int) -> None:
    _expire(b, size, keep, t)
    index = int(t // size)
    if len(b) > _B_FIRST and b[-3] >= index:  # this bucket (or an event a bit late)
        b[-2] += 1
        b[-1] += amount
    else:
        if index <= b[_B_EXPIRED] - keep:  # older than the window already read
            b[_B_EXPIRED] = _NEVER
        b.extend((index, 1, amount))
    b[_B_COUNT] += 1
    b[_B_TOTAL] += amount


class Velocity:
    """Counts and sums of one key's events over 1 min, 1 h (exact), 24 h and 7 d (bucketed).

    There is one per consumer, merchant, device, IP and service provider seen in the last
    week, and the collector walks every object that can hold others: a key is this object and
    four flat arrays (which CPython's collector tracks too, but which hold no objects to
    visit), where the earlier deques, bucket objects and lists were eight. The last hour's
    events are ``times`` and ``amounts`` from ``head`` on, in arrival order; ``split`` is the
    first of them inside the minute; ``hours`` (24 buckets) and ``days`` (7) are bucket arrays
    (``_expire``). Amounts and sums are 64-bit: an amount is at most ``money.AMOUNT_MAX``
    (10**15), and a sum that ever passed 2**63 would raise ``OverflowError``, never wrap."""

    __slots__ = ("amounts", "c1h", "c1m", "days", "head", "hours", "s1h", "s1m", "split",
                 "times")

    def __init__(self) -> None:
        self.times = _EMPTY_TIMES[:]
        self.amounts = _EMPTY_AMOUNTS[:]
        self.head = self.split = 0
        self.c1m = self.s1m = self.c1h = self.s1h = 0
        self.hours = _EMPTY_BUCKETS[:]
        self.days = _EMPTY_BUCKETS[:]

    def _advance(self, t: float) -> None:
        times, amounts = self.times, self.amounts
        head, end = self.head, len(times)
        hour_ago = t - 3600
        while head < end and times[head] <= hour_ago:
            amount = amounts[head]
            self.c1h -= 1
            self.s1h -= amount
            if self.split <= head:  # it was inside the minute too
                self.c1m -= 1
                self.s1m -= amount
            head += 1
        split = max(self.split, head)
        minute_ago = t - 60
        while split < end and times[split] <= minute_ago:
            self.c1m -= 1
            self.s1m -= amounts[split]
            split += 1
        if head >= _COMPACT_MIN and 2 * head >= end:
            del times[:head]
            del amounts[:head]
            split -= head
            head = 0
        self.head, self.split = head, split

    def add(self, t: float, amount: int) -> None:
        self._advance(t)
        self.times.append(t)
        self.amounts.append(amount)
        self.c1m += 1
        self.s1m += amount
        self.c1h += 1
        self.s1h += amount
        _bucket_add(self.hours, 3600, 24, t, amount)
        _bucket_add(self.days, 86_400, 7, t, amount)

    def window(self, t: float) -> tuple[int, int, int, int, int, int, int, int]:
        """(count, sum) over 1 min, 1 h, 24 h and 7 d before ``t``."""
        self._advance(t)
        hours, days = self.hours, self.days
        _expire(hours, 3600, 24, t)
        _expire(days, 86_400, 7, t)
        return (self.c1m, self.c1h, hours[_B_COUNT], days[_B_COUNT], self.s1m, self.s1h,
                hours[_B_TOTAL], days[_B_TOTAL])


class Seen:
    """``other -> last seen`` for one key, pruned lazily, and the same times kept sorted, so a
    distinct count over a window is one binary search however many others a key has seen (a
    merchant's payers, an IP's accounts: thousands)."""

    __slots__ = ("last", "pruned_at_size", "times")

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.times: list[float] = []  # the values of ``last``, ascending
        self.pruned_at_size = DISTINCT_PRUNE_MIN

    def add(self, other: str, t: float) -> None:
        last, times = self.last, self.times
        old = last.get(other)
        if old is not None:
            del times[bisect_left(times, old)]
        last[other] = t
        if not times or t >= times[-1]:
            times.append(t)
        else:  # an event a bit late
            insort(times, t)
        if len(last) > 2 * self.pruned_at_size:
            cutoff = t - WINDOW_LONG_S
            self.last = {k: v for k, v in last.items() if v > cutoff}
            self.times = times[bisect_right(times, cutoff):]
            self.pruned_at_size = max(DISTINCT_PRUNE_MIN, len(self.last))

    def distinct(self, t: float, window_s: float) -> int:
        """Others last seen after ``t - window_s``."""
        times = self.times
        return len(times) - bisect_right(times, t - window_s)


class UnionFind:
    """Accounts and devices joined whenever an account is seen on a device."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.accounts: dict[str, int] = {}  # root -> how many accounts in its group

    def find(self, x: str) -> str:
        parent = self.parent
        if x not in parent:
            parent[x] = x
            self.accounts[x] = 1 if x.startswith("a:") else 0
            return x
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.accounts[ra] < self.accounts[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.accounts[ra] += self.accounts.pop(rb)

    def group_accounts(self, x: str) -> int:
        return self.accounts[self.find(x)] if x in self.parent else 0


def _age_days(since: datetime | None, now: datetime) -> float:
    return -1.0 if since is None else max(0.0, (now - since).total_seconds() / 86_400)


def _ratio(amount: int, total: int, count: int) -> float:
    return 0.0 if count == 0 or total <= 0 else round(amount * count / total, 4)


class FeatureState:
    """The fold of the decision log that features are read from."""

    def __init__(self) -> None:
        self.velocity: dict[str, Velocity] = {}
        self.counterparties: dict[str, Seen] = {}  # consumer -> whom it paid
        self.payers: dict[str, Seen] = {}  # merchant or recipient -> who paid it
        self.device_accounts: dict[str, Seen] = {}
        self.ip_accounts: dict[str, Seen] = {}
        self.devices_of: dict[str, set[str]] = {}
        self.new_payers: dict[tuple[str, int], int] = {}  # (merchant, day) -> count
        self.today = 0
        self.small: dict[str, deque[float]] = {}  # merchant -> times of small payments, 1 h
        self.groups = UnionFind()
        self.last_seq = 0  # the log is folded up to here, but for ``gaps``
        self.own: set[int] = set()  # seqs this process wrote (and folded) past ``last_seq``
        # Seqs at or below ``last_seq`` that were missing when the log was read past them, and
        # when (monotonic seconds): on PostgreSQL a seq is drawn at insert, so a lower one may
        # still commit after a higher one was read (or never: its transaction rolled back).
        self.gaps: dict[int, float] = {}

    def wrote(self, seq: int) -> None:
        """This process logged ``seq`` (its event already folded): never fold it again, and
        move ``last_seq`` over it when nothing before it is missing."""
        if seq <= self.last_seq:
            return
        own = self.own
        own.add(seq)
        while self.last_seq + 1 in own:
            self.last_seq += 1
            own.discard(self.last_seq)

    @staticmethod
    def _keys(e: Event) -> list[str]:
        keys = [f"c:{e.actor_id}"]
        for prefix, value in (("m", e.counterparty_id), ("d", e.device_id),
                              ("i", e.client_ip), ("s", e.sp_id)):
            if value:
                keys.append(f"{prefix}:{value}")
        return keys

    def apply(self, e: Event, t: float) -> None:
        """Count a decided event."""
        velocity, amount = self.velocity, e.amount
        for key in self._keys(e):
            v = velocity.get(key)
            if v is None:
                v = velocity[key] = Velocity()
            v.add(t, amount)
        actor, cp = e.actor_id, e.counterparty_id
        if cp:
            self.counterparties.setdefault(actor, Seen()).add(cp, t)
            payers = self.payers.setdefault(cp, Seen())
            if actor not in payers.last:
                day = int(t // 86_400)
                if day > self.today:  # a new day: yesterday's counts are no longer read
                    self.today = day
                    self.new_payers = {k: v for k, v in self.new_payers.items() if k[1] >= day}
                self.new_payers[(cp, day)] = self.new_payers.get((cp, day), 0) + 1
            payers.add(actor, t)
            if e.amount <= SMALL_AMOUNT_MAX:
                self.small.setdefault(cp, deque()).append(t)
        if e.device_id:
            self.device_accounts.setdefault(e.device_id, Seen()).add(actor, t)
            self.devices_of.setdefault(actor, set()).add(e.device_id)
            self.groups.union(f"a:{actor}", f"d:{e.device_id}")
        if e.client_ip:
            self.ip_accounts.setdefault(e.client_ip, Seen()).add(actor, t)

    def features(self, e: Event, now: datetime) -> dict[str, float | int | str]:
        """The features of ``e`` from what came before it (``e`` itself is not counted)."""
        t = now.timestamp()
        # Every name in its place from the start (the order the log row's JSON keeps), each
        # window at zero: a key never seen (most of a grab's) costs nothing more.
        f: dict[str, float | int | str] = _BLANK.copy()
        f["amount"] = e.amount
        f["kind"] = e.kind
        f["category"] = e.category or ""
        f["kind_code"] = KINDS.index(e.kind) if e.kind in KINDS else len(KINDS)
        f["is_payment"] = int(e.kind == "payment")
        f["is_p2p"] = int(e.kind == "p2p")
        f["is_withdrawal"] = int(e.kind == "withdrawal")
        f["hour"] = now.hour
        f["category_code"] = CATEGORIES.index(e.category) if e.category in CATEGORIES else -1
        velocity = self.velocity
        for prefix, value, names in ((
                ("c:", e.actor_id, _WINDOW_NAMES[0]), ("m:", e.counterparty_id, _WINDOW_NAMES[1]),
                ("d:", e.device_id, _WINDOW_NAMES[2]), ("i:", e.client_ip, _WINDOW_NAMES[3]),
                ("s:", e.sp_id, _WINDOW_NAMES[4]))):
            v = velocity.get(prefix + value) if value else None
            if v is not None:
                f.update(zip(names, v.window(t), strict=True))
        f.update(self._history(e, now, t, f))
        f.update(self._relations(e, t))
        assert len(f) == len(_BLANK), "a feature outside the blank's order"
        return f

    def _history(self, e: Event, now: datetime, t: float,
                 f: dict[str, float | int | str]) -> dict[str, float | int]:
        seen = self.counterparties.get(e.actor_id)
        devices = self.devices_of.get(e.actor_id)
        return {
            "amount_vs_consumer_avg": _ratio(e.amount, int(f["c_sum_7d"]), int(f["c_count_7d"])),
            "amount_vs_merchant_avg": _ratio(e.amount, int(f["m_sum_7d"]), int(f["m_count_7d"])),
            "first_pair": int(not e.counterparty_id or seen is None or
                              e.counterparty_id not in seen.last),
            "new_device": int(bool(e.device_id and devices and e.device_id not in devices)),
            "account_age_days": round(_age_days(e.actor_since, now), 3),
            "counterparty_age_days": round(_age_days(e.counterparty_since, now), 3),
            "c_distinct_counterparties_24h": seen.distinct(t, 86_400) if seen else 0,
        }

    def _relations(self, e: Event, t: float) -> dict[str, float | int]:
        cp = e.counterparty_id
        payers = self.payers.get(cp) if cp else None
        small = self.small.get(cp) if cp else None
        while small and small[0] <= t - 3600:
            small.popleft()
        dev = self.device_accounts.get(e.device_id) if e.device_id else None
        ip = self.ip_accounts.get(e.client_ip) if e.client_ip else None
        return {
            "m_distinct_payers_24h": payers.distinct(t, 86_400) if payers else 0,
            "m_new_payers_today": self.new_payers.get((cp, int(t // 86_400)), 0) if cp else 0,
            "m_small_count_1h": len(small) if small else 0,
            "d_accounts": len(dev.last) if dev else 0,
            "i_accounts_24h": ip.distinct(t, 86_400) if ip else 0,
            "device_group_size": self._group_size(e),
            "loop_back": int(self._sent(cp, e.actor_id, t)),
            "loop_ring": int(self._loop3(e.actor_id, cp, t)),
        }

    def _group_size(self, e: Event) -> int:
        """Accounts in the actor's device-linked group once this event links it to its device
        (a new account on a farm's phone sees the farm's size at once)."""
        groups, me = self.groups, f"a:{e.actor_id}"
        size = groups.group_accounts(me) or 1
        dev = f"d:{e.device_id}" if e.device_id else None
        if dev is not None and dev in groups.parent and \
                (me not in groups.parent or groups.find(me) != groups.find(dev)):
            size += groups.group_accounts(dev)
        return size

    def _sent(self, src: str | None, dst: str, t: float) -> bool:
        seen = self.counterparties.get(src) if src else None
        last = seen.last.get(dst) if seen else None
        return last is not None and last > t - WINDOW_LONG_S

    def _loop3(self, actor: str, cp: str | None, t: float) -> bool:
        """Money went from ``cp`` to ``actor`` through one or two others lately, and now goes
        ``actor -> cp``: a ring of three or four. At most ``LOOP_SCAN_MAX`` accounts are
        looked at, so a busy account costs no more than a quiet one."""
        if not cp:
            return False
        frontier, seen, scanned = [cp], {cp, actor}, 0
        for _hop in range(2):
            nxt = []
            for node in frontier:
                paid = self.counterparties.get(node)
                if paid is None:
                    continue
                for x in paid.last:
                    scanned += 1
                    if scanned > LOOP_SCAN_MAX:
                        return False
                    if x not in seen:
                        if self._sent(x, actor, t):
                            return True
                        seen.add(x)
                        nxt.append(x)
            frontier = nxt
        return False
