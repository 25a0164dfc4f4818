"""API keys missing from the cache (each consumer's first request) are read from the database
together, and each request still gets exactly its own party, on both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.aio_support import run_in_own_loop

from conftest import Api
from lianjie.api import keys, make_runtime
from lianjie.api.background import observe_revocations
from lianjie.api.keys import KeyCache, Principal, Role
from lianjie.errors import DomainError, ErrorCode

CONSUMERS = 20


def _resolve(api: Api, headers: list[str]) -> list[Principal | BaseException]:
    async def all_at_once() -> list[Principal | BaseException]:
        return list(await asyncio.gather(*(api.rt.principal_of(h) for h in headers),
                                         return_exceptions=True))
    return run_in_own_loop(all_at_once(), 30.0)


def test_keys_missing_from_the_cache_are_read_together(api: Api) -> None:
    made = [api.ok("POST", "/v1/consumers", api.operator_key, {"name": f"c{i}"})
            for i in range(CONSUMERS)]
    spare = api.ok("POST", "/v1/api_keys", api.operator_key, {"party_id": made[0]["id"]})
    api.ok("POST", f"/v1/api_keys/{spare['id']}/revoke", api.operator_key)
    api.rt.key_cache.clear()
    headers = [f"Bearer {c['api_key']}" for c in made]
    headers += ["Bearer lj_cus_nobody", f"Bearer {spare['secret']}", headers[3]]
    reads = api.rt.key_lookups.reads

    found = _resolve(api, headers)

    assert api.rt.key_lookups.reads == reads + 1  # every miss in one read
    for consumer, principal in zip(made, found[:CONSUMERS], strict=True):
        assert isinstance(principal, Principal), principal
        assert (principal.party_id, principal.role) == (consumer["id"], Role.CONSUMER)
    for refused in found[CONSUMERS:CONSUMERS + 2]:  # unknown, revoked
        assert isinstance(refused, DomainError) and refused.code == ErrorCode.INVALID_API_KEY
    assert found[-1] == found[3]  # the same key twice in one read
    assert _resolve(api, headers[:CONSUMERS]) == found[:CONSUMERS]
    assert api.rt.key_lookups.reads == reads + 1  # now cached


def test_a_key_revoked_after_it_was_cached_stops_working(api: Api) -> None:
    consumer = api.ok("POST", "/v1/consumers", api.operator_key, {"name": "c"})
    spare = api.ok("POST", "/v1/api_keys", api.operator_key, {"party_id": consumer["id"]})
    (principal,) = _resolve(api, [f"Bearer {spare['secret']}"])
    assert isinstance(principal, Principal) and principal.party_id == consumer["id"]
    api.ok("POST", f"/v1/api_keys/{spare['id']}/revoke", api.operator_key)
    (refused,) = _resolve(api, [f"Bearer {spare['secret']}"])
    assert isinstance(refused, DomainError) and refused.code == ErrorCode.INVALID_API_KEY


def test_a_key_revoked_through_another_process_stops_working_there_within_a_tick(
        api: Api) -> None:
    """Another server process on the same database (a runtime of its own) keeps a key it has
    verified in its cache; once the key is revoked, that process's next read of the revocation
    epoch (its ``RevocationWatcher`` reads it every second) forgets it, instead of serving it
    until the cache's time to live. The process that revoked it forgets it at once."""
    other = make_runtime(api.rt.engine)
    consumer = api.ok("POST", "/v1/consumers", api.operator_key, {"name": "c"})
    spare = api.ok("POST", "/v1/api_keys", api.operator_key, {"party_id": consumer["id"]})
    header, main_header = f"Bearer {spare['secret']}", f"Bearer {consumer['api_key']}"

    def resolve(h: str) -> Principal:
        return run_in_own_loop(other.principal_of(h), 30.0)

    # Both keys verified and cached by the other process, the spare one by this one too.
    assert resolve(header).party_id == resolve(main_header).party_id == consumer["id"]
    assert isinstance(_resolve(api, [header])[0], Principal)
    api.ok("POST", f"/v1/api_keys/{spare['id']}/revoke", api.operator_key)
    refused = _resolve(api, [header])[0]  # this process forgot it at once
    assert isinstance(refused, DomainError) and refused.code == ErrorCode.INVALID_API_KEY
    reads = other.key_lookups.reads
    assert resolve(header).party_id == consumer["id"]  # the other has not seen it yet
    assert other.key_lookups.reads == reads  # served from its cache
    observe_revocations(other)  # what its watcher does every second
    with pytest.raises(DomainError) as raised:
        resolve(header)
    assert raised.value.code == ErrorCode.INVALID_API_KEY
    # Its cache started again: the live key is read again, and served.
    assert resolve(main_header).party_id == consumer["id"]
    assert other.key_lookups.reads == reads + 2


def test_a_lookup_under_way_while_its_key_is_revoked_is_forgotten_at_the_next_read(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup reads the epoch, then the keys: a key it finds live was live after that epoch,
    so a revocation committed while the lookup is under way moves the epoch past the one the
    key is cached with, and the next read of the epoch empties the cache. (Reading the keys
    first, on PostgreSQL, where each statement sees the latest commits, the key would be cached
    with the new epoch and served until the time to live; on SQLite both reads see one
    snapshot.)"""
    other = make_runtime(api.rt.engine)
    consumer = api.ok("POST", "/v1/consumers", api.operator_key, {"name": "c"})
    spare = api.ok("POST", "/v1/api_keys", api.operator_key, {"party_id": consumer["id"]})
    header = f"Bearer {spare['secret']}"
    real_lookup = keys.lookup_many
    revoked: list[bool] = []

    def lookup_then_revoke(conn: Any, digests: Any) -> Any:
        found = real_lookup(conn, digests)
        if not revoked:  # the revocation commits once this lookup has read the keys
            revoked.append(True)
            api.ok("POST", f"/v1/api_keys/{spare['id']}/revoke", api.operator_key)
        return found

    monkeypatch.setattr(keys, "lookup_many", lookup_then_revoke)
    assert run_in_own_loop(other.principal_of(header), 30.0).party_id == consumer["id"]
    assert revoked
    observe_revocations(other)
    with pytest.raises(DomainError) as raised:
        run_in_own_loop(other.principal_of(header), 30.0)
    assert raised.value.code == ErrorCode.INVALID_API_KEY


def test_a_key_read_before_a_revocation_the_cache_has_seen_is_not_cached() -> None:
    """The race the epochs close: a lookup that read a key live at epoch 0 finishes after the
    cache has observed epoch 1 (the key's revocation); its result is not kept. Only the
    watcher's read moves the cache back to a lower epoch (a restored database)."""
    cache, principal = KeyCache(), Principal("key_1", "cus_1", Role.CONSUMER)
    cache.observe(0)
    cache.put(b"d", principal, 0)
    assert cache.get(b"d") == principal
    cache.observe(1)
    assert cache.get(b"d") is None
    cache.put(b"d", principal, 0)  # read before the revocation
    assert cache.get(b"d") is None
    cache.observe(0)  # a lookup's older epoch, read late, changes nothing
    cache.put(b"d", principal, 0)
    assert cache.get(b"d") is None
    cache.put(b"d", principal, 1)
    assert cache.get(b"d") == principal
    cache.observe(0, authoritative=True)  # the database went back to epoch 0
    assert cache.get(b"d") is None and cache.epoch == 0
    cache.put(b"d", principal, 0)
    assert cache.get(b"d") == principal
