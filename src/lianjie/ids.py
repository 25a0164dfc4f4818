"""Public identifiers: a type prefix and a random part (``mch_3kTq...``), as Stripe does.

Random ids spread rows over a key space, so tables keyed by them can later be partitioned by key
across nodes. Ledger entries and accounts use 64-bit integers internally for speed, shown
publicly with their prefix (``txf_123``, ``acc_45``).
"""

from __future__ import annotations

import os
import secrets
import threading

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 20  # 62^20 ~ 2^119: no collisions in practice


_RANDOM_SPACE = len(_ALPHABET) ** RANDOM_LENGTH
_DRAW_LIMIT = (1 << 128) // _RANDOM_SPACE * _RANDOM_SPACE  # uniform below it, modulo 62^20
_PAIRS = tuple(_ALPHABET[i % 62] + _ALPHABET[i // 62] for i in range(62 * 62))


class _RandomBytes:
    """Bytes from ``os.urandom`` (the source ``secrets`` uses), read 4,095 at a time: one
    system call for a few hundred ids, not one each. A forked child starts empty, so two
    processes never hand out the same bytes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buf = b""
        self.at = 0
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.buf, self.at = b"", 0

    def take(self, n: int) -> bytes:
        with self.lock:
            if self.at + n > len(self.buf):
                self.buf, self.at = os.urandom(4095), 0
            at = self.at
            self.at = at + n
            return self.buf[at:at + n]


_random_bytes = _RandomBytes().take


def new_id(prefix: str) -> str:
    """``prefix_`` and ``RANDOM_LENGTH`` characters of ``_ALPHABET``, uniform over all of them:
    a 128-bit number from the system's random source, drawn again in the rare case (1 in
    483,000) that it falls past the largest multiple of 62^20 below 2^128, taken modulo 62^20
    and written in base 62, two digits at a time. Every payment makes a few (its order, its
    event, its risk decision)."""
    assert prefix.isalpha() and prefix.islower(), prefix
    while True:
        value = int.from_bytes(_random_bytes(16), "little")
        if value < _DRAW_LIMIT:
            break
    value %= _RANDOM_SPACE
    out = []
    for _ in range(RANDOM_LENGTH // 2):
        value, pair = divmod(value, 3844)
        out.append(_PAIRS[pair])
    return prefix + "_" + "".join(out)


def secret_token(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)


def format_int_id(prefix: str, value: int) -> str:
    return f"{prefix}_{value}"


INT_ID_MAX = 2**63 - 1  # the ids are signed 64-bit columns


def parse_int_id(prefix: str, public: str) -> int | None:
    """``txf_123`` -> 123 for the right prefix, else None (also past a 64-bit column)."""
    head, sep, tail = public.partition("_")
    if sep != "_" or head != prefix or not (tail.isascii() and tail.isdigit()) or \
            len(tail) > 19:
        return None
    value = int(tail)
    return value if value <= INT_ID_MAX else None
