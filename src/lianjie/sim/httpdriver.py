"""The HTTP driver: the simulator as API clients, calling a Lianjie server over real HTTP.

Each party acts with its own API key, as it would in production: the operator creates service
providers, consumers and institutions and decides KYC; a service provider onboards its
sub-merchants with its key; a merchant creates its stores and codes with its key; a consumer
pays and moves money with its key. A merchant's till creates, closes and refunds orders: a
direct merchant's with the merchant's key, a sub-merchant's through its service provider, which
integrates the till and calls on the merchant's behalf. Every POST carries a fresh
``Idempotency-Key``, reused only when the same request is retried after a transport error or a
503.

Tasks run in ``HTTP_LANES`` lanes, one thread and one connection pool each; a task always goes
to the lane its lane key hashes to, so one consumer's requests stay in order while different
consumers' requests overlap (and share the server's group commits). The order in which lanes
interleave varies from run to run, but tasks in different lanes are independent by
construction (see ``ops``), so the outcomes do not.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx

from lianjie.sim import ops as o
from lianjie.sim.config import (
    HTTP_LAG_S_MAX,
    HTTP_LANES,
    HTTP_RETRY_COUNT_MAX,
    HTTP_TIMEOUT_S,
)
from lianjie.sim.drivers import Database

RETRY_BACKOFF_S = 0.2
Json = dict[str, Any]


class HttpDriver:
    """Runs ops as API requests; ``db`` is set when the simulator owns the server's database."""

    lag_s_max: int | None = HTTP_LAG_S_MAX

    def __init__(self, base_url: str, operator_key: str, db: Database | None,
                 lanes: int = HTTP_LANES) -> None:
        assert 1 <= lanes <= 64
        self.base_url = base_url.rstrip("/")
        self.operator_key = operator_key
        self.db = db
        self.keys: dict[str, str] = {}  # party id -> its API key
        self.parents: dict[str, str] = {}  # sub-merchant id -> its service provider's id
        self.refs: dict[str, str] = {}  # order ref -> order id
        self._clients = [httpx.Client(base_url=self.base_url, timeout=HTTP_TIMEOUT_S)
                         for _ in range(lanes)]
        self._lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"lianjie-sim-lane{i}")
                       for i in range(lanes)]
        self._pending: list[tuple[o.Task, Future[list[o.Outcome]]]] = []
        self._steps_pending = 0

    @property
    def pending(self) -> int:
        return self._steps_pending

    def submit(self, task: o.Task) -> None:
        lane = zlib.crc32(task.lane.encode()) % len(self._lanes)
        future = self._lanes[lane].submit(self._run_task, self._clients[lane], task)
        self._pending.append((task, future))
        self._steps_pending += len(task.steps)

    def _run_task(self, client: httpx.Client, task: o.Task) -> list[o.Outcome]:
        outcomes: list[o.Outcome] = []
        for step in task.steps:
            if outcomes and not outcomes[-1].ok:
                outcomes.append(o.SKIPPED)
                continue
            outcomes.append(_HANDLERS[type(step.op)](self, client, step.op))
        return outcomes

    def drain(self) -> list[tuple[o.Step, o.Outcome]]:
        done: list[tuple[o.Step, o.Outcome]] = []
        for task, future in self._pending:
            done.extend(zip(task.steps, future.result(), strict=True))
        self._pending.clear()
        self._steps_pending = 0
        return done

    def housekeeping(self, now: datetime) -> tuple[int, int]:
        """Expiry on a server we own; an external server's background worker does its own."""
        return self.db.housekeeping(now) if self.db else (0, 0)

    def finish(self, now: datetime) -> int:
        return self.db.finish(now) if self.db else 0

    def verify(self) -> list[str]:
        if self.db:
            return self.db.verify()
        r = self._clients[0].get("/v1/ledger/verify", headers=self._auth(self.operator_key))
        if r.status_code != 200:
            return [f"ledger verification request failed: HTTP {r.status_code}"]
        return [f"{v['code']} {v['subject']}: {v['detail']}" for v in r.json()["violations"]]

    def wallet_balances(self, consumer_ids: list[str]) -> dict[str, int] | None:
        """From the database when it is ours, else as each consumer sees it in the API."""
        if self.db:
            return self.db.wallet_balances(consumer_ids)
        out: dict[str, int] = {}
        for consumer_id in consumer_ids:
            r = self._clients[0].get("/v1/wallet", headers=self._auth(self.keys[consumer_id]))
            if r.status_code != 200:
                return None
            out[consumer_id] = int(r.json()["balance"])
        return out

    def close(self) -> None:
        for lane in self._lanes:
            lane.shutdown(wait=True)
        for client in self._clients:
            client.close()

    # -- requests ------------------------------------------------------------------------------

    @staticmethod
    def _auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def post(self, client: httpx.Client, key: str, path: str, body: Json | None
             ) -> tuple[o.Outcome, Json]:
        """POST with one idempotency key, retried on transport errors and 503."""
        headers = {**self._auth(key), "Idempotency-Key": str(uuid.uuid4())}
        outcome = o.Outcome(o.Status.FAILED, code="transport_error")
        for attempt in range(HTTP_RETRY_COUNT_MAX):
            if attempt:
                time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
            try:
                response = client.post(path, json=body, headers=headers)
            except httpx.TransportError as exc:
                outcome = o.Outcome(o.Status.FAILED, code="transport_error", message=str(exc))
                continue
            if response.status_code == 503:
                outcome = o.Outcome(o.Status.FAILED, code="service_unavailable")
                continue
            return _parse(response)
        return outcome, {}

    def order_id(self, ref: str) -> str:
        # A ref is missing only when the step that created the order failed; the path then
        # names no order and the server answers order_not_found, which is counted.
        return self.refs.get(ref, "ord_unknown")


def _parse(response: httpx.Response) -> tuple[o.Outcome, Json]:
    try:
        data = response.json()
    except ValueError:
        return o.Outcome(o.Status.FAILED, code=f"http_{response.status_code}"), {}
    if response.status_code >= 300:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        return o.Outcome(o.Status.FAILED, code=str(error.get("code", response.status_code)),
                         message=error.get("message")), {}
    result = o.Result(id=str(data["id"]), amount=int(data.get("amount") or 0),
                      fee=int(data.get("fee_amount", data.get("fee_refunded")) or 0),
                      commission=int(data.get("commission_amount",
                                              data.get("commission_refunded")) or 0))
    return o.Outcome(o.Status.OK, result), data


# -- one handler per op ---------------------------------------------------------------------

Handler = Callable[[HttpDriver, httpx.Client, Any], o.Outcome]


def _keeping_key(d: HttpDriver, done: tuple[o.Outcome, Json]) -> o.Outcome:
    outcome, data = done
    if outcome.ok:
        d.keys[data["id"]] = data["api_key"]
    return outcome


def _institution(d: HttpDriver, c: httpx.Client, op: o.CreateInstitution) -> o.Outcome:
    return _keeping_key(d, d.post(c, d.operator_key, "/v1/institutions", {"name": op.name}))


def _service_provider(d: HttpDriver, c: httpx.Client, op: o.CreateServiceProvider
                      ) -> o.Outcome:
    body = {"name": op.name, "commission_share_bps": op.commission_share_bps}
    return _keeping_key(d, d.post(c, d.operator_key, "/v1/service_providers", body))


def _consumer(d: HttpDriver, c: httpx.Client, op: o.CreateConsumer) -> o.Outcome:
    return _keeping_key(d, d.post(c, d.operator_key, "/v1/consumers", {"name": op.name}))


def _merchant(d: HttpDriver, c: httpx.Client, op: o.OnboardMerchant) -> o.Outcome:
    key = d.keys[op.sp_id] if op.sp_id else d.operator_key
    body = {"name": op.name, "business_type": op.business_type,
            "fee_rate_bps": op.fee_rate_bps}
    outcome = _keeping_key(d, d.post(c, key, "/v1/merchants", body))
    if outcome.ok and op.sp_id and outcome.result:
        d.parents[outcome.result.id] = op.sp_id
    return outcome


def _till_key(d: HttpDriver, merchant_id: str) -> str:
    """Whose key the till uses: a sub-merchant's cash register is integrated by its service
    provider, which calls on the merchant's behalf; a direct merchant calls with its own."""
    sp_id = d.parents.get(merchant_id)
    return d.keys[sp_id] if sp_id else d.keys[merchant_id]


def _kyc(d: HttpDriver, c: httpx.Client, op: o.DecideKyc) -> o.Outcome:
    body = {"decision": "approved" if op.approve else "rejected"}
    return d.post(c, d.operator_key, f"/v1/merchants/{op.merchant_id}/kyc", body)[0]


def _store(d: HttpDriver, c: httpx.Client, op: o.CreateStore) -> o.Outcome:
    return d.post(c, d.keys[op.merchant_id], f"/v1/merchants/{op.merchant_id}/stores",
                  {"name": op.name})[0]


def _qr_code(d: HttpDriver, c: httpx.Client, op: o.CreateQrCode) -> o.Outcome:
    return d.post(c, d.keys[op.merchant_id], f"/v1/merchants/{op.merchant_id}/qr_codes",
                  {"description": op.description, "store_id": op.store_id})[0]


def _top_up(d: HttpDriver, c: httpx.Client, op: o.TopUp) -> o.Outcome:
    return d.post(c, d.keys[op.consumer_id], "/v1/wallet/top_ups",
                  {"institution_id": op.institution_id, "amount": op.amount})[0]


def _withdraw(d: HttpDriver, c: httpx.Client, op: o.Withdraw) -> o.Outcome:
    return d.post(c, d.keys[op.consumer_id], "/v1/wallet/withdrawals",
                  {"institution_id": op.institution_id, "amount": op.amount})[0]


def _transfer(d: HttpDriver, c: httpx.Client, op: o.Transfer) -> o.Outcome:
    return d.post(c, d.keys[op.consumer_id], "/v1/wallet/transfers",
                  {"recipient_id": op.recipient_id, "amount": op.amount, "note": op.note})[0]


def _keeping_ref(d: HttpDriver, ref: str, done: tuple[o.Outcome, Json]) -> o.Outcome:
    outcome, data = done
    if outcome.ok:
        d.refs[ref] = data["id"]
    return outcome


def _create_order(d: HttpDriver, c: httpx.Client, op: o.CreateOrder) -> o.Outcome:
    body = {"out_trade_no": op.out_trade_no, "amount": op.amount,
            "description": op.description, "store_id": op.store_id,
            "expires_in_s": op.expires_in_s, "merchant_id": op.merchant_id}
    return _keeping_ref(d, op.ref, d.post(c, _till_key(d, op.merchant_id), "/v1/orders", body))


def _pay_order(d: HttpDriver, c: httpx.Client, op: o.PayOrder) -> o.Outcome:
    return d.post(c, d.keys[op.consumer_id], f"/v1/orders/{d.order_id(op.ref)}/pay",
                  {"device_id": op.device_id})[0]


def _pay_static(d: HttpDriver, c: httpx.Client, op: o.PayStatic) -> o.Outcome:
    done = d.post(c, d.keys[op.consumer_id], f"/v1/qr_codes/{op.qr_code_id}/pay",
                  {"amount": op.amount, "device_id": op.device_id})
    return _keeping_ref(d, op.ref, done)


def _close(d: HttpDriver, c: httpx.Client, op: o.CloseOrder) -> o.Outcome:
    return d.post(c, _till_key(d, op.merchant_id), f"/v1/orders/{d.order_id(op.ref)}/close",
                  None)[0]


def _refund(d: HttpDriver, c: httpx.Client, op: o.RefundOrder) -> o.Outcome:
    body = {"out_refund_no": op.out_refund_no, "amount": op.amount, "reason": op.reason}
    return d.post(c, _till_key(d, op.merchant_id), f"/v1/orders/{d.order_id(op.ref)}/refunds",
                  body)[0]


_HANDLERS: dict[type[o.Op], Handler] = {
    o.CreateInstitution: _institution,
    o.CreateServiceProvider: _service_provider,
    o.CreateConsumer: _consumer,
    o.OnboardMerchant: _merchant,
    o.DecideKyc: _kyc,
    o.CreateStore: _store,
    o.CreateQrCode: _qr_code,
    o.TopUp: _top_up,
    o.Withdraw: _withdraw,
    o.Transfer: _transfer,
    o.CreateOrder: _create_order,
    o.PayOrder: _pay_order,
    o.PayStatic: _pay_static,
    o.CloseOrder: _close,
    o.RefundOrder: _refund,
}
