"""Imports every context's tables so the one ``metadata`` is complete (for Alembic and tests)."""

import lianjie.events  # noqa: F401
import lianjie.ledger.schema  # noqa: F401
import lianjie.payments.schema  # noqa: F401
import lianjie.api.schema  # noqa: F401 - the API's own tables (keys, idempotency)
