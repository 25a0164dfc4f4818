"""The HTTP API: FastAPI routes, API keys and roles, idempotency keys, Stripe-shaped errors.

Nothing imports ``api``; it imports the contexts' public surfaces.
"""

from lianjie.api.app import create_app, make_runtime
from lianjie.api.keys import Principal, Role, do_issue_key
from lianjie.api.runtime import Runtime

__all__ = ["Principal", "Role", "Runtime", "create_app", "do_issue_key", "make_runtime"]
