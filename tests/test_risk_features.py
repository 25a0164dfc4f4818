"""Features against their definitions: windowed velocity equals a brute-force count, groups and
loops are found, and an event's own features never count the event itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
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
