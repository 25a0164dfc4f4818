"""The page registry: what the console shows, where, and to whom.

A page is a module that builds an ``APIRouter`` of its routes and registers a ``Page`` for it:
its path under ``/console``, its navigation label (a message key), the roles that may open it
and its place in the navigation. ``lianjie.console.app`` mounts every registered page's router
and draws the navigation from the registry, showing each operator only the pages their role
opens. Routes enforce the same roles server side through ``guard(PAGE)``.

An overview panel is a chart on the overview page fed by a function of the business day;
capabilities add theirs with ``register_panel``. See ``docs/console.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from sqlalchemy import Connection

from lianjie.console.operators import ALL_ROLES, ConsoleRole


@dataclass(frozen=True)
class Page:
    key: str  # unique, also the CSS id of its navigation entry
    path: str  # under /console, e.g. "/risk"
    title: str  # message key of its navigation label
    roles: frozenset[ConsoleRole] = ALL_ROLES
    router: APIRouter = field(default_factory=APIRouter, compare=False)
    order: int = 100  # navigation position, lower first
    nav: bool = True


# (conn, day_start, day_end) -> {"labels": [...], "datasets": [{"label", "data"}]}
PanelData = Callable[[Connection, datetime, datetime], dict[str, Any]]


@dataclass(frozen=True)
class Panel:
    key: str
    title: str  # message key
    kind: str  # Chart.js type: line, bar, doughnut
    data: PanelData
    roles: frozenset[ConsoleRole] = ALL_ROLES
    order: int = 100


_PAGES: dict[str, Page] = {}
_PANELS: dict[str, Panel] = {}


def register(page: Page) -> Page:
    assert page.path.startswith("/") and not page.path.startswith("/static"), page.path
    assert _PAGES.get(page.key, page) == page, f"page {page.key!r} registered twice"
    _PAGES[page.key] = page
    return page


def register_panel(panel: Panel) -> Panel:
    assert _PANELS.get(panel.key, panel) == panel, f"panel {panel.key!r} registered twice"
    _PANELS[panel.key] = panel
    return panel


def pages() -> list[Page]:
    return sorted(_PAGES.values(), key=lambda p: (p.order, p.key))


def nav_for(role: ConsoleRole) -> list[Page]:
    return [p for p in pages() if p.nav and role in p.roles]


def panels_for(role: ConsoleRole) -> list[Panel]:
    return sorted((p for p in _PANELS.values() if role in p.roles), key=lambda p: (p.order,
                                                                                     p.key))
