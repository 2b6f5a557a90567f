"""The placement solver: pure functions from a PlacementProblem (queue, targets, policy) to a Plan."""

from placement.bound import lp_bound
from placement.check import check_plan
from placement.cpsat import solve_cpsat
from placement.forecast import Forecast, forecast_starts
from placement.greedy import solve_greedy
from placement.solve import solve
from placement.types import (
    Action,
    Decision,
    JobDemand,
    Node,
    PlacementProblem,
    Plan,
    Policy,
    Release,
    Target,
)

__all__ = [
    "Action",
    "Decision",
    "Forecast",
    "JobDemand",
    "Node",
    "PlacementProblem",
    "Plan",
    "Policy",
    "Release",
    "Target",
    "check_plan",
    "lp_bound",
    "solve",
    "forecast_starts",
    "solve_cpsat",
    "solve_greedy",
]
