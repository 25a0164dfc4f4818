"""How a red packet's total is split into shares: pure functions, no database.

A share is computed when it is grabbed, from what is left, as WeChat's "double mean" does:

- ``equal``: the split ``money.allocate`` makes with equal weights, share by share: every
  share is ``amount // shares`` and the first ``amount % shares`` takers get one fen more, so
  shares differ by at most 0.01 (1.00 in 3 shares is 0.34, 0.33, 0.33).
- ``lucky``: each taker gets a whole number of fen drawn uniformly from 1 to
  ``min(2 * left // shares_left, left - (shares_left - 1))``: at most twice the mean of what is
  left, and never so much that a later share would be below 0.01. The last taker gets the
  remainder. The draw is a hash of the packet's secret seed and the share's number, so a
  packet's split is fixed when it is sent (replaying the grabs gives the same amounts) but
  cannot be predicted by takers.

Either way every share is at least 1 fen and the shares sum to the total exactly, because
the last share is defined as the remainder.
"""

from __future__ import annotations

import hashlib

EQUAL = "equal"
LUCKY = "lucky"
SPLITS = (EQUAL, LUCKY)


def share(split: str, seed: str, amount: int, shares: int, seq: int, amount_taken: int) -> int:
    """The amount of share number ``seq`` (0-based) after ``amount_taken`` went to earlier
    takers."""
    left = amount - amount_taken
    shares_left = shares - seq
    assert split in SPLITS and 0 < shares_left <= shares and left >= shares_left
    if split == EQUAL:
        return amount // shares + (1 if seq < amount % shares else 0)
    if shares_left == 1:
        return left
    upper = min(2 * left // shares_left, left - (shares_left - 1))
    assert upper >= 1
    digest = hashlib.blake2b(f"{seed}:{seq}".encode(), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "big") % upper


def all_shares(split: str, seed: str, amount: int, shares: int) -> list[int]:
    """Every share in taking order (for tests and reports); sums to ``amount``."""
    out: list[int] = []
    taken = 0
    for seq in range(shares):
        part = share(split, seed, amount, shares, seq, taken)
        out.append(part)
        taken += part
    assert taken == amount and all(part >= 1 for part in out)
    return out
