"""Public identifiers: a type prefix and a random part (``mch_3kTq...``), as Stripe does.

Random ids spread rows over a key space, so tables keyed by them can later be partitioned by key
across nodes. Ledger entries and accounts use 64-bit integers internally for speed, shown
publicly with their prefix (``txf_123``, ``acc_45``).
"""

from __future__ import annotations

import secrets

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 20  # 62^20 ~ 2^119: no collisions in practice


_RANDOM_SPACE = len(_ALPHABET) ** RANDOM_LENGTH


def new_id(prefix: str) -> str:
    """``prefix_`` and ``RANDOM_LENGTH`` characters of ``_ALPHABET``, uniform over all of them:
    one draw from the system's generator, written in base 62 (a draw per character read the
    system's generator 20 times, a few per cent of a payment's CPU)."""
    assert prefix.isalpha() and prefix.islower(), prefix
    value = secrets.randbelow(_RANDOM_SPACE)
    digits = []
    for _ in range(RANDOM_LENGTH):
        value, digit = divmod(value, 62)
        digits.append(_ALPHABET[digit])
    return prefix + "_" + "".join(digits)


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
