"""Background work of a running server, on one thread, each job in bounded batches:

- expire unpaid orders past their expiry, and ledger holds past their timeout;
- turn new outbox events into webhook deliveries, and send the deliveries that are due;
- purge idempotency keys older than their time to live;
- return unclaimed red packet money, end campaigns past their end (their unspent budget goes
  back to the funder), and refresh marketing segments once a day.

Every job is a unit of work through the committer, so it shares durable group commits with
requests; a tick queues them all at once, in order, so they usually share one. A failing job is
logged and retried on the next tick; it never stops the others.
"""

from __future__ import annotations

import logging
import threading

import httpx
from sqlalchemy.exc import SQLAlchemyError

from lianjie import ledger, marketing, risk
from lianjie import payments as pay
from lianjie.api import idempotency, keys
from lianjie.api.runtime import Runtime
from lianjie.errors import LianjieError

log = logging.getLogger("lianjie.background")
TICK_S = 1.0
PURGE_EVERY_TICKS = 600


class _Ticking:
    """A daemon thread that calls ``_on_tick`` every ``tick_s`` seconds until ``stop``."""

    def __init__(self, name: str, tick_s: float) -> None:
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            self._on_tick()

    def _on_tick(self) -> None:
        raise NotImplementedError


class Background(_Ticking):
    def __init__(self, rt: Runtime, *, tick_s: float = TICK_S) -> None:
        super().__init__("lianjie-background", tick_s)
        self.rt = rt
        self._ticks = 0
        self._client = httpx.Client(timeout=pay.webhooks.TIMEOUT_S)

    def stop(self) -> None:
        super().stop()
        self._client.close()

    def _on_tick(self) -> None:
        self._ticks += 1
        self.tick(purge=self._ticks % PURGE_EVERY_TICKS == 0)

    def tick(self, *, purge: bool = False) -> None:
        rt = self.rt
        jobs = [
            ("expire orders", lambda c: pay.do_expire_orders(c, rt.clock.now())),
            ("expire holds", lambda c: ledger.expire_holds(c, rt.clock.now())),
            ("enqueue webhooks", lambda c: pay.do_enqueue_deliveries(c, rt.clock.now())),
        ]
        # marketing: unclaimed red packet money goes back; campaigns past their end return
        # their unspent budget; segments are re-evaluated daily
        jobs += [
            ("expire red packets", lambda c: marketing.do_expire_packets(c, rt.clock.now())),
            ("end campaigns", lambda c: marketing.do_end_due_campaigns(c, rt.clock.now())),
            ("refresh segments", lambda c: marketing.do_refresh_due(c, rt.clock.now())),
        ]
        # risk: review cases nobody decided in time release their holds
        jobs.append(("expire risk cases", lambda c: risk.do_expire_cases(c, rt.clock.now())))
        if purge:
            jobs.append(("purge idempotency keys",
                         lambda c: idempotency.do_purge(c, rt.clock.now())))
        # All queued at once, so that they share one group commit (in this order) instead of
        # costing the writer a transaction each, every tick.
        queued = []
        for name, unit in jobs:
            try:
                queued.append((name, rt.committer.submit(unit)))
            except LianjieError as exc:  # the committer has stopped
                log.error("background job %s failed: %s", name, exc)
        for name, future in queued:
            try:
                future.result()
            except (LianjieError, AssertionError, OSError) as exc:
                log.error("background job %s failed: %s", name, exc)
            except Exception:  # a bug or a database error: logged, and the thread lives on
                log.exception("background job %s failed", name)
        try:
            pay.deliver_due(rt.engine, rt.committer.run, self._client, rt.clock.now())
        except (LianjieError, OSError) as exc:
            log.error("webhook delivery failed: %s", exc)


class RevocationWatcher(_Ticking):
    """Every server process's own thread (the background jobs run in one process of several;
    this runs in each): it reads the API keys' revocation epoch every tick, so a key revoked
    through another process stops working in this one within a tick (``keys.KeyCache``)."""

    def __init__(self, rt: Runtime, *, tick_s: float = TICK_S) -> None:
        super().__init__("lianjie-key-epoch", tick_s)
        self.rt = rt

    def _on_tick(self) -> None:
        try:
            observe_revocations(self.rt)
        except Exception:  # a bug: logged, and the thread lives on (keys.CACHE_TTL_S)
            log.exception("watching the API keys' revocations failed")


def observe_revocations(rt: Runtime) -> None:
    """Read the API keys' revocation epoch: a key revoked through another process leaves this
    one's cache within a tick (``keys.KeyCache``). This read is the authority: the cache takes
    its epoch even when it is lower than one seen before (a database restored from a backup),
    where lookups only ever move it forward."""
    try:
        with rt.engine.connect() as conn:
            epoch = keys.revocation_epoch(conn)
    except SQLAlchemyError as exc:  # the next tick tries again
        log.error("reading the API keys' revocation epoch failed: %s", exc)
        return
    if epoch < rt.key_cache.epoch:
        log.warning("the API keys' revocation epoch went back from %d to %d (a restored "
                    "database?): the key cache starts again", rt.key_cache.epoch, epoch)
    rt.key_cache.observe(epoch, authoritative=True)
