"""The audit log (every operator action and refused attempt, newest first) and the list of
console users with their roles and live sessions. Administrators only; users are added with
``lianjie console add-user``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.responses import Response

from lianjie.api.runtime import runtime
from lianjie.console import audit, i18n, operators
from lianjie.console.operators import ConsoleRole, Operator
from lianjie.console.registry import Page, register
from lianjie.console.web import guard, render

PAGE = register(Page("audit", "/audit", "nav.audit", roles=frozenset({ConsoleRole.ADMIN}),
                     order=900))
Viewer = Annotated[Operator, Depends(guard(PAGE))]
PAGE_SIZE = 100
FILTER_LENGTH_MAX = 64

i18n.add_messages({
    "nav.audit": ("Audit log", "审计日志"),
    "operators.title": ("Console users", "控制台用户"),
    "operators.role": ("Role", "角色"),
    "operators.sessions": ("Live sessions", "在线会话"),
    "operators.how": ("Add or reset a user with: lianjie console add-user NAME --role ROLE",
                      "添加或重置用户：lianjie console add-user 用户名 --role 角色"),
})


@PAGE.router.get("/audit")
async def audit_log(request: Request, op: Viewer, user: str = "", target: str = "",
                    before: int | None = None) -> Response:
    user, target = user.strip()[:FILTER_LENGTH_MAX], target.strip()[:FILTER_LENGTH_MAX]
    rows = await runtime(request).read(lambda c: audit.recent(
        c, target=target or None, username=user or None, before_id=before, limit=PAGE_SIZE + 1))
    return render(request, op, "audit.html", audit=rows[:PAGE_SIZE], user=user, target=target,
                  has_more=len(rows) > PAGE_SIZE)


@PAGE.router.get("/audit/operators")
async def operator_list(request: Request, op: Viewer) -> Response:
    rt = runtime(request)
    now = rt.clock.now()
    found = await rt.read(lambda c: operators.list_operators(c, now))
    return render(request, op, "operators.html", operators=found)
