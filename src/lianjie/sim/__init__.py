"""The traffic simulator: an agent-based model of service providers, merchants and consumers
driving the real system, in-process or over HTTP, repeatable from a seed.

``run_simulation(engine, SimConfig(...))`` onboards a population on the day before the first
simulated day, then plays each business day (Asia/Shanghai) event by event on a manual clock
and returns a ``SimReport``. Behaviours are registered by name (``register``), so later ones
(fraud patterns, credit defaults) plug in beside the built-in shopping, P2P and withdrawals;
what they plant is kept in the report's ground-truth labels, apart from anything the system
sees.

Modules: ``config`` (settings and limits), ``profiles`` (business types), ``world`` (agents and
beliefs), ``population`` (who joins, and onboarding), ``behaviours`` (what agents do, and the
registry), ``ops`` (the operations and outcomes), ``drivers`` (in-process), ``httpdriver`` and
``server`` (over HTTP), ``engine`` (time, events, the run) and ``report``.
"""

from lianjie.sim.behaviours import BEHAVIOURS, Behaviour, register
from lianjie.sim.config import SHANGHAI, SimConfig
from lianjie.sim.engine import run_simulation
from lianjie.sim.report import SimReport
from lianjie.sim.world import GroundTruth, Label, World

__all__ = [
    "BEHAVIOURS",
    "SHANGHAI",
    "Behaviour",
    "GroundTruth",
    "Label",
    "SimConfig",
    "SimReport",
    "World",
    "register",
    "run_simulation",
]
