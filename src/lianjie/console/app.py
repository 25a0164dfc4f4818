"""Mounting the console on the FastAPI app: log-in and log-out, the language switch, the bundled
static files, every registered page, and the pages shown for refusals.

Everything is rendered on the server from Jinja2 templates; the browser runs one small script
(``static/console.js``) that draws charts with the bundled Chart.js and polls JSON endpoints to
keep them live. Nothing is fetched from outside the server.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Connection
from starlette.responses import RedirectResponse, Response

from lianjie.api.runtime import runtime
from lianjie.console import audit, i18n, operators, registry
from lianjie.console.operators import Operator
from lianjie.console.web import (
    PREFIX,
    SESSION_COOKIE,
    LoginRequired,
    Op,
    Refused,
    act,
    current_operator,
    language,
    read_form,
    redirect,
    render,
)

STATIC_DIR = Path(__file__).parent / "static"
USERNAME_LENGTH_MAX = 64


def _load_pages() -> None:
    """Import the built-in page modules; each registers itself."""
    from lianjie.console.pages import audit_log, ledger, marketing, overview, parties, payments
    from lianjie.console.pages import clearing as clearing_pages
    from lianjie.console.pages import credit as credit_pages
    from lianjie.console.pages import risk as risk_pages

    assert overview and parties and payments and ledger and audit_log and marketing
    assert clearing_pages and risk_pages and credit_pages


def _safe_next(url: str | None) -> str:
    """Only a path inside the console: never an open redirect."""
    if url and url.startswith(PREFIX + "/") and not url.startswith("//") and "\\" not in url:
        return url
    return PREFIX + "/overview"


def mount(app: FastAPI) -> None:
    _load_pages()
    app.mount(PREFIX + "/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    _install_handlers(app)

    @app.get(PREFIX, include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse(PREFIX + "/overview", status_code=303)

    @app.get(PREFIX + "/login", include_in_schema=False)
    async def login_form(request: Request, next: str | None = None) -> Response:
        return render(request, None, "login.html", next=_safe_next(next))

    @app.post(PREFIX + "/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        return await _login(request)

    @app.post(PREFIX + "/logout", include_in_schema=False)
    async def logout(request: Request, op: Op) -> Response:
        token = request.cookies.get(SESSION_COOKIE, "")

        def change(conn: Connection, _now: datetime) -> tuple[None, None]:
            operators.do_end_session(conn, token)
            return None, None

        response = await act(request, op, action="logout", target=op.username,
                             roles=operators.ALL_ROLES, change=change, back=PREFIX + "/login")
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    @app.get(PREFIX + "/lang/{lang}", include_in_schema=False)
    async def switch_language(lang: str, next: Annotated[str | None, Query()] = None
                              ) -> Response:
        # A display preference kept in the browser, not a change of server state.
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(i18n.LANG_COOKIE, i18n.pick(lang), path=PREFIX, samesite="lax",
                            max_age=365 * 86400)
        return response

    for page in registry.pages():
        app.include_router(page.router, prefix=PREFIX, include_in_schema=False)


async def _login(request: Request) -> Response:
    rt = runtime(request)
    form = await read_form(request)
    username = form.get("username", "").strip().lower()[:USERNAME_LENGTH_MAX]
    password = form.get("password", "")
    target = _safe_next(form.get("next"))
    client_ip = request.client.host if request.client else None
    now = rt.clock.now()

    def look(conn: Connection) -> tuple[bool, operators.Credentials | None]:
        return operators.throttled(conn, now, username), operators.find_user(conn, username)

    throttled, user = await rt.read(look)
    if throttled:
        return render(request, None, "login.html", status_code=429, next=target,
                      error="login.throttled", username=username)
    ok = user is not None and await anyio.to_thread.run_sync(
        operators.check_password, user.password_hash, password)
    if not ok or user is None:
        await rt.write(lambda c: operators.do_record_failure(c, now, username, client_ip))
        return render(request, None, "login.html", status_code=401, next=target,
                      error="login.failed", username=username)
    found = user
    token = await rt.write(lambda c: _start(c, now, found))
    response = redirect(target)
    response.set_cookie(SESSION_COOKIE, token, path=PREFIX, httponly=True, samesite="lax",
                        max_age=int(operators.SESSION_TTL.total_seconds()))
    return response


def _start(conn: Connection, now: datetime, user: operators.Credentials) -> str:
    token = operators.do_start_session(conn, now, user.user_id)
    audit.record(conn, now, user_id=user.user_id, username=user.username,
                 role=user.role.value, action="login", target=user.username)
    return token


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, _exc: LoginRequired) -> Response:
        if request.url.path.startswith(PREFIX + "/api/"):
            return Response('{"error": "login_required"}', status_code=401,
                            media_type="application/json")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = PREFIX + "/overview"
        response = RedirectResponse(f"{PREFIX}/login?next={target}", status_code=303)
        if request.cookies.get(SESSION_COOKIE):
            response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        lang = language(request)
        values = dict(exc.values)
        if "what" in values:
            values["what"] = i18n.translate(lang, str(values["what"]))
        try:
            op: Operator | None = await current_operator(request)
        except LoginRequired:
            op = None
        role = i18n.translate(lang, f"role.{op.role.value}") if op else ""
        return render(request, op, "refused.html", status_code=403,
                      message=i18n.translate(lang, f"refused.{exc.reason}", role=role, **values))
