"""``lianjie serve --workers 2``: two processes listening on one port, the races that can cross
processes coming out as they do in one, and Ctrl-C stopping both cleanly.

With several processes each runs its own committer, so what one process's committer serialised
is now up to the database: on SQLite one writer at a time, on PostgreSQL row locks and the
Idempotency-Key's advisory lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from conftest import _free_port

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
RACE_WIDTH = 16  # connections spread over the workers by SO_REUSEPORT; all in one: 2**-15
RACE_ROUNDS = 10
REVOCATION_DEADLINE_S = 10.0  # the key cache kept a key 30 s; the epoch is read every second


def _listeners(port: int) -> int:
    """How many sockets listen on ``port`` (TCP over IPv4)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows
               if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A")


def _race(base_url: str, requests: list[tuple[str, str, dict[str, Any], str]]
          ) -> list[httpx.Response]:
    barrier = threading.Barrier(len(requests))

    def send(req: tuple[str, str, dict[str, Any], str]) -> httpx.Response:
        path, key, body, idem = req
        with httpx.Client(base_url=base_url, timeout=30.0, trust_env=False) as client:
            client.get("/healthz")  # connected before the barrier, so the requests overlap
            barrier.wait()
            return client.post(path, json=body, headers={"Authorization": f"Bearer {key}",
                                                         "Idempotency-Key": idem})

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(send, requests))


def _wallet_statuses(base_url: str, secret: str) -> list[int]:
    """``GET /v1/wallet`` with ``secret`` on ``RACE_WIDTH`` new connections, spread over the
    workers: each reply's status."""
    def get(_: int) -> int:
        with httpx.Client(base_url=base_url, timeout=30.0, trust_env=False) as c:
            return c.get("/v1/wallet", headers={"Authorization": f"Bearer {secret}"}).status_code

    with ThreadPoolExecutor(max_workers=RACE_WIDTH) as pool:
        return list(pool.map(get, range(RACE_WIDTH)))


def test_two_workers_serve_one_port_and_keep_the_races_safe(engine: Engine,
                                                            tmp_path: Path) -> None:
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    url = engine.url.render_as_string(hide_password=False)
    server = subprocess.Popen(
        [sys.executable, "-m", "lianjie.cli", "--database", url, "serve", "--port", str(port),
         "--workers", "2"],
        env={**os.environ, "LIANJIE_HOME": str(tmp_path)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True)
    try:
        client = httpx.Client(base_url=base_url, timeout=30.0, trust_env=False)
        deadline = time.monotonic() + START_TIMEOUT_S
        while _listeners(port) < 2:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        assert _listeners(port) == 2
        op = (tmp_path / "operator_key").read_text().strip()

        def ok(path: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
            r = client.post(path, json=body, headers={"Authorization": f"Bearer {key}",
                                                      "Idempotency-Key": uuid.uuid4().hex})
            assert r.status_code < 300, r.text
            return dict(r.json())

        shop = ok("/v1/merchants", op, {"name": "Shop", "business_type": "cafe"})
        ok(f"/v1/merchants/{shop['id']}/kyc", op, {"decision": "approved"})
        bank = ok("/v1/institutions", op, {"name": "Bank"})
        payers = [ok("/v1/consumers", op, {"name": f"C{i}"}) for i in range(RACE_WIDTH)]
        for payer in payers:
            ok("/v1/wallet/top_ups", payer["api_key"],
               {"institution_id": bank["id"], "amount": 10_000})

        # One Idempotency-Key sent to both workers at once: one order, the same reply to all.
        # (Without the key's lock on PostgreSQL about one round in two answered a 500.)
        for round_no in range(RACE_ROUNDS):
            body = {"out_trade_no": f"T-{round_no}", "amount": 1_000, "description": "tea"}
            replies = _race(base_url, [("/v1/orders", shop["api_key"], body,
                                        f"key-{round_no}")] * RACE_WIDTH)
            assert [r.status_code for r in replies] == [201] * RACE_WIDTH, \
                [r.text for r in replies if r.status_code != 201]
            assert len({r.json()["id"] for r in replies}) == 1
        order_id = replies[0].json()["id"]

        # Many consumers pay that order at once: one pays, the others are told it is paid.
        replies = _race(base_url, [(f"/v1/orders/{order_id}/pay", p["api_key"], {},
                                    uuid.uuid4().hex) for p in payers])
        outcomes = sorted(r.status_code for r in replies)
        assert outcomes == [200] + [409] * (RACE_WIDTH - 1), [r.text for r in replies]
        assert all(r.json()["error"]["code"] == "order_already_paid"
                   for r in replies if r.status_code == 409)
        balances = [client.get("/v1/wallet", headers={"Authorization": f"Bearer {p['api_key']}"}
                               ).json()["balance"] for p in payers]
        assert sorted(balances) == [9_000] + [10_000] * (RACE_WIDTH - 1)

        verify = client.get("/v1/ledger/verify", headers={"Authorization": f"Bearer {op}"})
        assert verify.json()["ok"] is True, verify.text

        # A key both workers have verified and cached, revoked through one of them, stops
        # working in both within a few ticks of their key-epoch threads (it took the cache's
        # 30 s before: this deadline is well below that).
        spare = ok("/v1/api_keys", op, {"party_id": payers[0]["id"]})
        assert _wallet_statuses(base_url, spare["secret"]) == [200] * RACE_WIDTH
        ok(f"/v1/api_keys/{spare['id']}/revoke", op, {})
        deadline = time.monotonic() + REVOCATION_DEADLINE_S
        while (statuses := _wallet_statuses(base_url, spare["secret"])) != [401] * RACE_WIDTH:
            assert time.monotonic() < deadline, statuses
            time.sleep(0.2)
        client.close()
    finally:
        os.killpg(server.pid, signal.SIGINT)  # as Ctrl-C in a terminal
        try:
            code = server.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            raise
    assert code == 0
    assert _listeners(port) == 0
