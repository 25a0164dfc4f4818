"""Imports every context's tables so the one ``metadata`` is complete (for Alembic and tests)."""

import lianjie.events  # noqa: F401
import lianjie.ledger.schema  # noqa: F401
