"""Features against their definitions: windowed velocity equals a brute-force count, groups and
loops are found, and an event's own features never count the event itself."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st

from lianjie.risk.features import (
    DISTINCT_PRUNE_MIN,
    WINDOW_LONG_S,
    Event,
    FeatureState,
    Seen,
    Velocity,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 20_000), st.integers(1, 10_000)), max_size=80),
       st.floats(0, 20_000))
def test_velocity_windows_equal_a_brute_force_count(gaps: list[tuple[float, int]],
                                                    probe_gap: float) -> None:
    v, events, t = Velocity(), [], 1_000_000.0
    for gap, amount in gaps:
        t += gap
        v.add(t, amount)
        events.append((t, amount))
    now = t + probe_gap
    c1m, c1h, c24, c7, s1m, s1h, s24, s7 = v.window(now)

    def brute(keep: object) -> tuple[int, int]:
        chosen = [a for x, a in events if keep(x)]  # type: ignore[operator]
        return len(chosen), sum(chosen)

    assert (c1m, s1m) == brute(lambda x: x > now - 60)
    assert (c1h, s1h) == brute(lambda x: x > now - 3600)
    assert (c24, s24) == brute(lambda x: int(x // 3600) >= int(now // 3600) - 23)
    assert (c7, s7) == brute(lambda x: int(x // 86_400) >= int(now // 86_400) - 6)


def _pay(state: FeatureState, when: datetime, actor: str, cp: str, amount: int = 100,
         device: str | None = None, kind: str = "p2p") -> dict[str, object]:
    e = Event(kind, f"s{when.timestamp()}", actor, amount, "CNY", cp, None, device, "10.0.0.1")
    feats = state.features(e, when)
    state.apply(e, when.timestamp())
    return feats


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3 * DISTINCT_PRUNE_MIN), st.floats(-7_200, 40_000),
                          st.floats(-90_000, 90_000)), max_size=400))
def test_distinct_counts_equal_a_scan_of_last_seen(steps: list[tuple[int, float, float]]
                                                   ) -> None:
    """Others seen, with time moving on and events arriving late, and counts asked at times
    before and after the latest event: the sorted times give the count a scan would, and the
    map (whose order loop detection walks) is what assignment alone would make."""
    seen, last, t = Seen(), {}, 5_000_000.0
    for other, step, probe in steps:
        t += step
        seen.add(f"o{other}", t)
        last[f"o{other}"] = t
        if len(seen.last) < len(last):  # pruned: what is older than the long window goes
            last = {k: v for k, v in last.items() if v > t - WINDOW_LONG_S}
        assert list(seen.last.items()) == list(last.items())
        assert seen.times == sorted(last.values())
        for window in (86_400.0, 3_600.0):
            cutoff = t + probe - window
            assert seen.distinct(t + probe, window) == sum(v > cutoff for v in last.values())


def test_loops_groups_and_history() -> None:
    s = FeatureState()
    first = _pay(s, T0, "a", "b", device="d1")
    assert first["first_pair"] == 1 and first["c_count_1h"] == 0  # not counting itself
    assert _pay(s, T0 + timedelta(minutes=1), "b", "a", device="d2")["loop_back"] == 1
    _pay(s, T0 + timedelta(minutes=2), "b", "c", device="d2")
    three = _pay(s, T0 + timedelta(minutes=3), "c", "a", device="d2")
    assert three["loop_ring"] == 1  # a -> b -> c, now c -> a
    again = _pay(s, T0 + timedelta(minutes=4), "a", "b", device="d2")
    assert again["first_pair"] == 0 and again["c_count_1h"] == 1
    assert again["d_accounts"] == 2  # b and c used d2 before
    assert again["device_group_size"] == 3  # a joins b and c through d2
    assert again["new_device"] == 1  # a had only used d1
    assert _pay(s, T0 + timedelta(days=9), "a", "b")["c_count_7d"] == 0


NEVER = -(1 << 62)


class _DequeBuckets:
    """The earlier shape of a key's buckets: a deque of ``[index, count, sum]`` lists."""

    __slots__ = ("buckets", "count", "expired_to", "keep", "size", "total")

    def __init__(self, size: int, keep: int) -> None:
        self.size, self.keep = size, keep
        self.buckets: deque[list[int]] = deque()  # [bucket index, count, sum], oldest first
        self.count = self.total = 0
        # Expired as of this bucket index: no bucket older than its window is held, so a read
        # in the same (or an earlier) bucket has nothing to expire.
        self.expired_to = NEVER

    def _expire(self, t: float) -> None:
        index = int(t // self.size)
        if index <= self.expired_to:
            return
        self.expired_to = index
        first = index - self.keep + 1
        buckets = self.buckets
        while buckets and buckets[0][0] < first:
            _, c, s = buckets.popleft()
            self.count -= c
            self.total -= s

    def add(self, t: float, amount: int) -> None:
        self._expire(t)
        index = int(t // self.size)
        buckets = self.buckets
        if buckets and buckets[-1][0] >= index:  # this bucket (or an event a bit late)
            buckets[-1][1] += 1
            buckets[-1][2] += amount
        else:
            if index <= self.expired_to - self.keep:  # older than the window already read
                self.expired_to = NEVER
            buckets.append([index, 1, amount])
        self.count += 1
        self.total += amount

    def window(self, t: float) -> tuple[int, int]:
        self._expire(t)
        return self.count, self.total


class _DequeVelocity:
    """The earlier shape of ``Velocity`` (eight objects a key for the collector to track), kept
    as the reference the flat arrays must agree with, late events included."""

    __slots__ = ("c1h", "c1m", "days", "hours", "recent", "s1h", "s1m", "split")

    def __init__(self) -> None:
        self.recent: deque[tuple[float, int]] = deque()
        self.split = 0  # recent[:split] are older than a minute
        self.c1m = self.s1m = self.c1h = self.s1h = 0
        self.hours = _DequeBuckets(3600, 24)
        self.days = _DequeBuckets(86_400, 7)

    def _advance(self, t: float) -> None:
        recent = self.recent
        while recent and recent[0][0] <= t - 3600:
            _, amount = recent.popleft()
            self.c1h -= 1
            self.s1h -= amount
            if self.split:
                self.split -= 1
            else:  # it was inside the minute too
                self.c1m -= 1
                self.s1m -= amount
        while self.split < len(recent) and recent[self.split][0] <= t - 60:
            self.c1m -= 1
            self.s1m -= recent[self.split][1]
            self.split += 1

    def add(self, t: float, amount: int) -> None:
        self._advance(t)
        self.recent.append((t, amount))
        self.c1m += 1
        self.s1m += amount
        self.c1h += 1
        self.s1h += amount
        self.hours.add(t, amount)
        self.days.add(t, amount)

    def window(self, t: float) -> tuple[int, int, int, int, int, int, int, int]:
        """(count, sum) over 1 min, 1 h, 24 h and 7 d before ``t``."""
        self._advance(t)
        c24, s24 = self.hours.window(t)
        c7, s7 = self.days.window(t)
        return self.c1m, self.c1h, c24, c7, self.s1m, self.s1h, s24, s7


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-4_000, 5_000), st.integers(1, 10_000),
                          st.booleans()), max_size=300), st.sampled_from([1.0, 0.05]))
@example([(60.0 if i % 7 else -100.0, 1 + i, i % 5 == 0) for i in range(600)], 0.5)
def test_velocity_agrees_with_the_deque_shape(steps: list[tuple[float, int, bool]],
                                              scale: float) -> None:
    """Events late as well as on time, windows read between them, a quiet key and a busy one
    (``scale`` 0.05, and the example: a hundred and more in the hour, the arrays compacted as
    they go): exactly what the deques of lists gave."""
    flat, ref, t = Velocity(), _DequeVelocity(), 2_000_000.0
    for step, amount, read in steps:
        t += step * scale
        if read:
            assert flat.window(t) == ref.window(t)
        else:
            flat.add(t, amount)
            ref.add(t, amount)
    assert flat.window(t + 30) == ref.window(t + 30)
    assert flat.window(t + 90_000) == ref.window(t + 90_000)
