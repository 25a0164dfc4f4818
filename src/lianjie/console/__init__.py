"""The operator console: server-rendered pages at ``/console`` for the people who run the
platform (overview charts, merchants and service providers, payments, the ledger, the audit log),
with operator log-in, roles, CSRF-protected actions and an audit row for every action.

Pages register themselves in ``registry``; ``docs/console.md`` shows how to add one.
"""

from lianjie.console.app import mount
from lianjie.console.operators import ConsoleRole, Operator
from lianjie.console.registry import Page, Panel, register, register_panel
from lianjie.console.web import act, guard, render

__all__ = ["ConsoleRole", "Operator", "Page", "Panel", "act", "guard", "mount", "register",
           "register_panel", "render"]
