"""Merkle trees as Certificate Transparency builds them (RFC 6962, RFC 9162 section 2.1).

Leaves and interior nodes are hashed with distinct prefixes (0x00 and 0x01), so a leaf can never
pass for a node. A tree of n leaves splits at the largest power of two below n; that shape lets
one append-only log answer both *inclusion* proofs (this leaf is in the tree with this root) and
*consistency* proofs (the tree of size m is a prefix of the tree of size n).

Depends on the standard library only, so a partner can copy this file with ``verify.py`` and
check proofs without the rest of Lianjie. Proof *generation* takes a ``subtree(a, b)`` function
returning the hash of leaves ``[a, b)``: in memory for tests and the verifier, or backed by the
stored complete-subtree hashes in the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()
Subtree = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    assert n >= 2
    return 1 << ((n - 1).bit_length() - 1)


def parents(level: Sequence[bytes]) -> list[bytes]:
    """The node hash of each pair of consecutive hashes (a last odd one is left out).

    The tight loop of tree building: one SHA-256 call per node, no function call around it."""
    pairs = iter(level)
    sha256 = hashlib.sha256
    return [sha256(b"\x01" + left + right).digest() for left, right in
            zip(pairs, pairs, strict=False)]


def root(leaves: Sequence[bytes]) -> bytes:
    """The tree hash of a list of leaf hashes, level by level (an odd last node moves up)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        nxt = parents(level)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def memory_subtree(leaves: Sequence[bytes]) -> Subtree:
    def subtree(a: int, b: int) -> bytes:
        return root(leaves[a:b])
    return subtree


def inclusion_path(subtree: Subtree, index: int, size: int) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]), leaf to root."""
    assert 0 <= index < size
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split(hi - lo)
        if index - lo < k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def consistency_path(subtree: Subtree, old_size: int, new_size: int) -> list[bytes]:
    """RFC 6962 PROOF(old_size, D[0:new_size]) for 0 < old_size <= new_size."""
    assert 0 < old_size <= new_size
    if old_size == new_size:
        return []
    out: list[bytes] = []
    lo, hi, m, whole = 0, new_size, old_size, True
    while True:
        n = hi - lo
        if m == n:
            if not whole:
                out.append(subtree(lo, hi))
            break
        k = split(n)
        if m <= k:
            out.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            out.append(subtree(lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    out.reverse()
    return out


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes],
                     expected_root: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       path: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2."""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not path and old_root == new_root
    proof = list(path)
    if old_size & (old_size - 1) == 0:
        proof.insert(0, old_root)
    if not proof:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
