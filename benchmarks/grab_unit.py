"""CPU of the red packet grab path itself: units of ``--grabs`` grabs (``do_grab_many`` in one
transaction, as one ``GrabBatcher`` unit), risk engine on as served, with the time Python's
garbage collector spends inside them (every collection timed through ``gc.callbacks``).

No threads, no committer: only the unit's own CPU (``time.process_time``), so it separates
the grab path's cost from the collector's, which ``benchmarks/marketing.py`` cannot. Each unit
grabs for new consumers, so the risk engine's state grows as it would on a busy packet.

    .venv/bin/python benchmarks/grab_unit.py [--units 6] [--grabs 4096] [--risk off]
        [--no-gc] [--freeze]

``--no-gc`` disables the collector (the code path alone); ``--freeze`` calls ``gc.freeze()``
after setting up (the imported modules and the fixtures are not traversed again). The last
line is one JSON object; the first unit (which loads the engine's state) is left out of the
rates.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from marketing import hot_packet, make_consumers

from lianjie import marketing as mkt
from lianjie import risk
from lianjie.clock import SystemClock
from lianjie.db import make_engine, migrate

PASSES: list[tuple[int, float]] = []
_STARTED = [0.0]


def _timed(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _STARTED[0] = time.process_time()
    else:
        PASSES.append((int(info["generation"]), time.process_time() - _STARTED[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--units", type=int, default=6)
    ap.add_argument("--grabs", type=int, default=4096)
    ap.add_argument("--risk", choices=("on", "off"), default="on")
    ap.add_argument("--no-gc", action="store_true")
    ap.add_argument("--freeze", action="store_true")
    args = ap.parse_args()
    n, units = args.grabs, args.units
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'grabs.sqlite3'}")
        migrate(engine)
        if args.risk == "off":
            risk.configure(engine, risk.RiskConfig(enabled=False))
        consumers = make_consumers(engine, units * n)
        packet = hot_packet(engine, units * n, units * n * 88)
        now = SystemClock().now()
        if args.no_gc:
            gc.disable()
        if args.freeze:
            gc.collect()
            gc.freeze()
        rows = []
        for k in range(units):
            PASSES.clear()
            gc.callbacks.append(_timed)
            with engine.begin() as conn:
                started = time.process_time()
                mkt.do_grab_many(conn, now, [mkt.GrabRequest(packet.id, c)
                                             for c in consumers[k * n:(k + 1) * n]])
                cpu = time.process_time() - started
            gc.callbacks.remove(_timed)
            full = [t for g, t in PASSES if g == 2]
            rows.append((cpu, sum(t for _, t in PASSES), len(full), sum(full)))
            print(f"unit {k}: {cpu * 1000:.0f} ms CPU, {n / cpu:.0f} grabs per CPU s; "
                  f"collector {rows[-1][1] * 1000:.0f} ms ({len(full)} full passes, "
                  f"{rows[-1][3] * 1000:.0f} ms)")
        engine.dispose()
    cpu_s = sum(r[0] for r in rows[1:])
    gc_s = sum(r[1] for r in rows[1:])
    print(json.dumps({"grabs_per_unit": n, "units": units, "risk": args.risk,
                      "gc": "off" if args.no_gc else ("frozen" if args.freeze else "on"),
                      "grabs_per_cpu_s": round(n * (units - 1) / cpu_s),
                      "grabs_per_cpu_s_outside_gc": round(n * (units - 1) / (cpu_s - gc_s)),
                      "gc_share": round(gc_s / cpu_s, 3),
                      "unit_cpu_ms": [round(r[0] * 1000) for r in rows],
                      "unit_gc_ms": [round(r[1] * 1000) for r in rows]}))


if __name__ == "__main__":
    main()
