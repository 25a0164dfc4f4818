"""Request plumbing shared by every console page: who is logged in, role checks, rendering,
forms, CSRF, and running an operator action through the runtime's write path with its audit row.

An action (``act``) is the console's only way to change anything. It checks the CSRF token and
the operator's role, then runs the domain's own ``do_*`` function and the audit record in one
unit of work on the group committer, exactly as the HTTP API's writes do, so the console and the
API share every rule and error. A refusal (bad token, wrong role, a domain error) is recorded in
the audit log too, and shown to the operator in their language.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, unquote

import anyio
import orjson
from fastapi import Depends, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import Connection
from starlette.responses import HTMLResponse, RedirectResponse, Response

from lianjie.api.runtime import Runtime, runtime
from lianjie.console import audit, i18n
from lianjie.console.operators import ConsoleRole, Operator, session_operator
from lianjie.console.registry import Page, nav_for
from lianjie.errors import DomainError
from lianjie.money import currency, format_amount

PREFIX = "/console"
SESSION_COOKIE = "lianjie_console"
FLASH_COOKIE = "lianjie_flash"
# Large enough for a partner's reconciliation file loaded into a form (the API takes more).
FORM_BYTES_MAX = 4 * 1024 * 1024
# Business days are China's (UTC+8, no daylight saving), as the simulator's are.
BUSINESS_TZ = timezone(timedelta(hours=8))

# Console pages are never framed (clickjacking) and never leak their URLs (ids) elsewhere.
SECURITY_HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
                    "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}

TEMPLATE_DIR = Path(__file__).parent / "templates"
env = Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=select_autoescape(),
                  trim_blocks=True, lstrip_blocks=True)


class LoginRequired(Exception):
    """No live session: the browser is sent to the log-in page."""


class Refused(Exception):
    """The operator may not do this (wrong role or a bad CSRF token): a 403 page."""

    def __init__(self, reason: str, **values: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.values = values


def money(amount_minor: int | None, code: str = "CNY") -> str:
    """For display: ``¥1,234.50``, or ``1,234.50 USD`` for other currencies."""
    if amount_minor is None:
        return ""
    text = format_amount(int(amount_minor), currency(code))
    sign = "-" if text.startswith("-") else ""
    whole, dot, frac = text.lstrip("-").partition(".")
    grouped = f"{int(whole):,}{dot}{frac}"
    return f"{sign}¥{grouped}" if code == "CNY" else f"{sign}{grouped} {code}"


def local_time(when: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return "" if when is None else when.astimezone(BUSINESS_TZ).strftime(fmt)


def to_json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


env.filters["money"] = money
env.filters["local"] = local_time
env.filters["tojson_str"] = to_json
env.filters["dict_money"] = lambda values, code: {
    k: money(v, code) if k == "amount" else v for k, v in values.items()}


def language(request: Request) -> str:
    return i18n.pick(request.cookies.get(i18n.LANG_COOKIE))


async def current_operator(request: Request) -> Operator:
    rt = runtime(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    now = rt.clock.now()
    op = await rt.read(lambda c: session_operator(c, now, token)) if token else None
    if op is None:
        raise LoginRequired()
    return op


Op = Annotated[Operator, Depends(current_operator)]


def guard(page: Page) -> Callable[..., Any]:
    """A route dependency: the operator, if their role opens ``page``; else a refusal."""

    async def dependency(request: Request) -> Operator:
        op = await current_operator(request)
        if op.role not in page.roles:
            raise Refused("role", what=page.title)
        return op

    return dependency


def render(request: Request, op: Operator | None, template: str, status_code: int = 200,
           **values: Any) -> Response:
    lang = language(request)
    flash = request.cookies.get(FLASH_COOKIE)
    page = env.get_template(template).render(
        request=request, op=op, lang=lang, prefix=PREFIX,
        t=lambda key, **kw: i18n.translate(lang, key, **kw),
        nav=nav_for(op.role) if op else [], path=request.url.path,
        flash=_flash(flash), **values)
    response = HTMLResponse(page, status_code=status_code, headers=SECURITY_HEADERS)
    if flash:
        response.delete_cookie(FLASH_COOKIE, path=PREFIX)
    return response


def _flash(raw: str | None) -> list[str] | None:
    if not raw:
        return None
    try:
        value = orjson.loads(unquote(raw))
    except orjson.JSONDecodeError:
        return None
    return [str(v) for v in value] if isinstance(value, list) and len(value) == 2 else None


def redirect(url: str, flash: tuple[str, str] | None = None) -> Response:
    response = RedirectResponse(url, status_code=303)
    if flash is not None:
        response.set_cookie(FLASH_COOKIE, quote(to_json(list(flash))), path=PREFIX,
                            httponly=True, samesite="lax", max_age=60)
    return response


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form body, one value per field (the last wins)."""
    body = await request.body()
    if len(body) > FORM_BYTES_MAX:
        return {}
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def check_csrf(op: Operator, form: dict[str, str]) -> bool:
    sent = form.get("csrf_token", "")
    return bool(sent) and hmac.compare_digest(sent, op.csrf_token)


# (conn, now) -> (before, after): the domain change, through a do_* function.
Change = Callable[[Connection, datetime], tuple[dict[str, Any] | None, dict[str, Any] | None]]


async def _record_refusal(rt: Runtime, op: Operator, action: str, target: str | None,
                          outcome: str, detail: str | None = None) -> None:
    now = rt.clock.now()
    await rt.write(lambda c: audit.record(c, now, user_id=op.id, username=op.username,
                                          role=op.role.value, action=action, target=target,
                                          outcome=outcome, detail=detail))


async def act(request: Request, op: Operator, *, action: str, target: str | None,
              roles: frozenset[ConsoleRole], change: Change, back: str) -> Response:
    """Run an operator action: CSRF, role, the change and its audit row, then back to ``back``
    with a message. Refusals are audited and shown; nothing else changes."""
    rt = runtime(request)
    await _allowed(request, rt, op, action, target, roles)

    def unit(conn: Connection) -> None:
        now = rt.clock.now()
        before, after = change(conn, now)
        audit.record(conn, now, user_id=op.id, username=op.username, role=op.role.value,
                     action=action, target=target, before=before, after=after)

    try:
        await rt.write(unit)
    except DomainError as exc:
        return await _refused(rt, op, action, target, exc, back)
    lang = language(request)
    return redirect(back, ("ok", i18n.translate(lang, "done")))


async def _allowed(request: Request, rt: Runtime, op: Operator, action: str, target: str | None,
                   roles: frozenset[ConsoleRole]) -> None:
    form = await read_form(request)
    if not check_csrf(op, form):
        await _record_refusal(rt, op, action, target, "csrf_refused")
        raise Refused("csrf")
    if op.role not in roles:
        await _record_refusal(rt, op, action, target, "role_refused")
        raise Refused("role", what=f"action.{action}")


async def _refused(rt: Runtime, op: Operator, action: str, target: str | None,
                   exc: DomainError, back: str) -> Response:
    await _record_refusal(rt, op, action, target, exc.code.value, exc.message)
    return redirect(back, ("error", f"{exc.code.value}: {exc.message}"))


# () -> (before, after): a job that commits in units of its own (end of day), in a thread.
Job = Callable[[], tuple[dict[str, Any] | None, dict[str, Any] | None]]


async def act_job(request: Request, op: Operator, *, action: str, target: str | None,
                  roles: frozenset[ConsoleRole], job: Job, back: str) -> Response:
    """``act`` for a job that is not one unit of work (end of day commits step by step and is
    resumable): the same CSRF and role checks, the job in a worker thread, then its audit row.
    A refused job (a ``DomainError``) is audited and shown like any refusal."""
    rt = runtime(request)
    await _allowed(request, rt, op, action, target, roles)
    try:
        before, after = await anyio.to_thread.run_sync(job)
    except DomainError as exc:
        return await _refused(rt, op, action, target, exc, back)
    now = rt.clock.now()
    await rt.write(lambda c: audit.record(c, now, user_id=op.id, username=op.username,
                                          role=op.role.value, action=action, target=target,
                                          before=before, after=after))
    return redirect(back, ("ok", i18n.translate(language(request), "done")))


def day_bounds(day: str | None, latest: datetime | None) -> tuple[datetime, datetime, str]:
    """The business day asked for (``YYYY-MM-DD``), else the one of ``latest`` (the last
    activity), else today; as UTC bounds and its ISO date."""
    chosen = None
    if day:
        try:
            chosen = datetime.strptime(day, "%Y-%m-%d").date()
        except ValueError:
            chosen = None
    if chosen is None:
        chosen = (latest or datetime.now(UTC)).astimezone(BUSINESS_TZ).date()
    start = datetime(chosen.year, chosen.month, chosen.day, tzinfo=BUSINESS_TZ).astimezone(UTC)
    return start, start + timedelta(days=1), chosen.isoformat()
