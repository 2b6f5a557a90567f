"""The placement solver: pure functions from a PlacementProblem (queue, targets, policy) to a Plan."""

from spillover.placement.bound import lp_bound
from spillover.placement.check import check_plan
from spillover.placement.cpsat import solve_cpsat
from spillover.placement.forecast import Forecast, forecast_starts
from spillover.placement.greedy import solve_greedy
from spillover.placement.solve import solve
from spillover.placement.types import (
    Action,
    Budget,
    CloudCap,
    Decision,
    JobDemand,
    Node,
    PlacementProblem,
    Plan,
    Policy,
    Quota,
    Release,
    Target,
)

__all__ = [
    "Action",
    "Budget",
    "CloudCap",
    "Decision",
    "Forecast",
    "JobDemand",
    "Node",
    "PlacementProblem",
    "Plan",
    "Policy",
    "Quota",
    "Release",
    "Target",
    "check_plan",
    "lp_bound",
    "solve",
    "forecast_starts",
    "solve_cpsat",
    "solve_greedy",
]
