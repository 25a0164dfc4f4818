"""Imports every context's tables so the one ``metadata`` is complete (for Alembic and tests).

This is a registry, not a context: it imports the API's tables too, which is why it lives
outside every context package.
"""

import lianjie.api.schema
import lianjie.clearing.schema
import lianjie.console.schema
import lianjie.credit.schema
import lianjie.events
import lianjie.ledger.schema
import lianjie.marketing.schema
import lianjie.payments.schema
import lianjie.risk.schema

__all__ = ["lianjie"]
