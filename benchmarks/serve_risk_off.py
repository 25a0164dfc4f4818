"""``lianjie serve`` with the risk engine off, for ``marketing.py --part http --risk off``.

The engine's settings live in the serving process (``risk.configure``), so a benchmark that
wants to measure the HTTP grab path without the risk decision starts the server through this
script: every engine the command makes is configured off, then the command runs as usual.
"""

from __future__ import annotations

import sys
from typing import Any

from sqlalchemy import Engine

from lianjie import cli, risk

_make_engine = cli.make_engine


def _engine_risk_off(*args: Any, **kwargs: Any) -> Engine:
    engine = _make_engine(*args, **kwargs)
    risk.configure(engine, risk.RiskConfig(enabled=False))
    return engine


if __name__ == "__main__":
    cli.make_engine = _engine_risk_off  # type: ignore[assignment]
    sys.exit(cli.main())
