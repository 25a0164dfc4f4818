"""Public identifiers: a type prefix and 20 characters drawn uniformly from 62, a forked
process drawing its own."""

from __future__ import annotations

import os
from collections import Counter

from lianjie import ids


def test_a_new_id_is_its_prefix_and_twenty_base62_characters() -> None:
    drawn = [ids.new_id("ord") for _ in range(20_000)]
    assert len(set(drawn)) == len(drawn)
    for value in drawn:
        prefix, _, tail = value.partition("_")
        assert prefix == "ord" and len(tail) == ids.RANDOM_LENGTH
        assert set(tail) <= set(ids._ALPHABET)


def test_every_position_uses_the_whole_alphabet_evenly() -> None:
    """Each character position is uniform over the 62 symbols (the last one too, which a draw
    from too small a range would leave mostly zero): over 31,000 ids each symbol is expected
    500 times at a position; a bound of 500 +- 150 fails a biased or stuck position."""
    tails = [ids.new_id("evt")[4:] for _ in range(31_000)]
    for position in range(ids.RANDOM_LENGTH):
        counts = Counter(t[position] for t in tails)
        assert set(counts) == set(ids._ALPHABET), position
        assert all(350 <= n <= 650 for n in counts.values()), (position, counts.most_common(3))


def test_a_forked_process_draws_other_ids_than_its_parent() -> None:
    """Ids come from a buffer of random bytes; a forked child (``lianjie serve --workers``
    spawns its workers, but an application embedding Lianjie may fork) starts with an empty
    one instead of a copy of its parent's, which would hand out the same ids in both."""
    ids.new_id("ord")  # the parent's buffer is filled
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running the test runner's exit
        os.close(read_end)
        os.write(write_end, " ".join(ids.new_id("ord") for _ in range(5)).encode())
        os._exit(0)
    os.close(write_end)
    parent = {ids.new_id("ord") for _ in range(5)}
    with os.fdopen(read_end, "rb") as pipe:
        child = set(pipe.read().decode().split())
    assert os.waitpid(pid, 0)[1] == 0
    assert len(child) == 5 and not child & parent
