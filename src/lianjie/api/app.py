"""The FastAPI application: routes, Stripe-shaped errors, the committer and background jobs.

``create_app`` builds an app around a ``Runtime``; ``lianjie serve`` runs it under uvicorn. The
OpenAPI document is at ``/openapi.json`` and interactive docs at ``/docs``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

from sqlalchemy import Engine
from starlette.responses import RedirectResponse, Response

import lianjie
from lianjie.api import (
    errors,
    routes_clearing,
    routes_credit,
    routes_marketing,
    routes_parties,
    routes_payments,
    routes_risk,
)
from lianjie.api.background import Background, RevocationWatcher
from lianjie.api.fastpath import LianjieApp
from lianjie.api.heap import HeapKeeper
from lianjie.api.keys import KeyCache
from lianjie.api.runtime import Runtime, json
from lianjie.clock import Clock, SystemClock
from lianjie.committer import Committer
from lianjie.payments import PaymentsConfig


def make_runtime(engine: Engine, *, clock: Clock | None = None,
                 cfg: PaymentsConfig | None = None) -> Runtime:
    return Runtime(engine=engine, committer=Committer(engine), clock=clock or SystemClock(),
                   cfg=cfg or PaymentsConfig(), key_cache=KeyCache())


def create_app(rt: Runtime, *, background: bool = True, keep_heap: bool = False
               ) -> LianjieApp:
    """The app: FastAPI, with the order, pay and grab routes answered below it
    (``api.fastpath``). ``keep_heap``: a server process's own (``api.heap``)."""
    @asynccontextmanager
    async def lifespan(_app: LianjieApp) -> AsyncIterator[None]:
        # Each part stopped in reverse order, also when a later one fails to start.
        with ExitStack() as started:
            rt.committer.start()
            started.callback(rt.committer.stop)
            if background:
                worker = Background(rt)
                worker.start()
                started.callback(worker.stop)
            watcher = RevocationWatcher(rt)
            watcher.start()
            started.callback(watcher.stop)
            if keep_heap:
                heap = HeapKeeper()
                heap.start()
                started.callback(heap.stop)
            yield

    app = LianjieApp(title="Lianjie", version=lianjie.__version__, lifespan=lifespan,
                     description="QR payments through service providers, wallets and a "
                                 "double-entry ledger. Amounts are integers of minor units "
                                 "(fen).")
    app.state.runtime = rt
    errors.install(app)
    app.include_router(routes_parties.router)
    app.include_router(routes_payments.router)
    app.include_router(routes_marketing.router)
    app.include_router(routes_risk.router)
    app.include_router(routes_clearing.router)
    app.include_router(routes_credit.router)

    from lianjie.console import mount as mount_console  # the console imports the runtime

    mount_console(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return json({"ok": True, "version": lianjie.__version__})

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/docs")

    return app
