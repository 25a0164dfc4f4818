"""The audit log: every operator action and refused attempt, newest first. Administrators
only."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.responses import Response

from lianjie.api.runtime import runtime
from lianjie.console import audit, i18n
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
})


@PAGE.router.get("/audit")
async def audit_log(request: Request, op: Viewer, user: str = "", target: str = "",
                    before: int | None = None) -> Response:
    user, target = user.strip()[:FILTER_LENGTH_MAX], target.strip()[:FILTER_LENGTH_MAX]
    rows = await runtime(request).read(lambda c: audit.recent(
        c, target=target or None, username=user or None, before_id=before, limit=PAGE_SIZE + 1))
    return render(request, op, "audit.html", audit=rows[:PAGE_SIZE], user=user, target=target,
                  has_more=len(rows) > PAGE_SIZE)
