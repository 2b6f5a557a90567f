"""The deterministic mode's budget (`Policy.work_limit`): work counted from what the search did, never the clock.

A work unit is about one second of this solver's work on the 2-core machine its constants were measured on
(the placement benchmark's instances). CP-SAT counts its own work in deterministic time, which it reports
exactly; everything else is charged by a model of its cost in terms of counts that the search itself
produces (jobs, LP options, column-generation rounds). The model only decides how far the search goes, so an
error in it makes a decision take longer or shorter than intended, never differ between two runs.
"""

from __future__ import annotations

import math

# CP-SAT deterministic time per work unit: on the benchmark's models one unit of it took 3.0-3.6 s of wall
# clock with one worker (solver.wall_time / solver.deterministic_time).
CPSAT_DTIME_PER_UNIT = 0.3
# A forecast of the whole plan (with the rounding that precedes it) on 1,000 jobs, and how it grows: the
# benchmark measured 0.014 s at 1,000 jobs, 0.06 s at 3,000, 0.3 s at 10,000.
FORECAST_1K = 0.014
FORECAST_GROWTH = 1.3
GREEDY_FORECASTS = 3.0  # greedy's pass costs about three forecasts (0.04 s at 1,000 jobs, 0.8 s at 10,000)
# One GLOP solve of column generation: pricing every option, plus the simplex over the columns in the LP.
LP_PER_OPTION_ROUND = 2e-6
LP_PER_COLUMN = 5e-6
ROUGH_PER_OPTION = 3.4e-6  # a scaled sample's LP, then every option priced once
# GLOP's own deterministic-time cap on each solve in this mode: a safety net for a pathological LP, far above
# what the benchmark's LPs take (the whole 10,000 x 50 relaxation at once: 0.3-1.0 of it, about 1.5 s here).
GLOP_MIN_DTIME = 10.0
GLOP_DTIME_PER_UNIT = 5.0


def forecast_work(n_jobs: int) -> float:
    """Work units of one forecast of a plan of `n_jobs` jobs (with its binding and pricing)."""
    return FORECAST_1K * (max(1, n_jobs) / 1000.0) ** FORECAST_GROWTH


def greedy_work(n_jobs: int) -> float:
    return GREEDY_FORECASTS * forecast_work(n_jobs)


def lp_work(options: int, columns: int, rounds: int) -> float:
    """Work units of a relaxation solved by `rounds` GLOP solves over `options` options (`columns` of them in the
    LP at the end); `rounds == 0` is the rough stand-in (a sample's LP, every option priced once)."""
    if rounds == 0:
        return ROUGH_PER_OPTION * options
    return LP_PER_OPTION_ROUND * options * rounds + LP_PER_COLUMN * columns


def cpsat_work(dtime: float) -> float:
    """Work units of a CP-SAT solve that reported `dtime` deterministic time."""
    return dtime / CPSAT_DTIME_PER_UNIT


def glop_dtime(work_limit: float) -> float:
    """The deterministic-time cap on each GLOP solve of a decision with this work limit."""
    return max(GLOP_MIN_DTIME, GLOP_DTIME_PER_UNIT * work_limit)


class Work:
    """What is left of a decision's work budget, and what one forecast of its plans costs."""

    def __init__(self, left: float, n_jobs: int) -> None:
        self.left = left
        self.spent = 0.0
        self.forecast = forecast_work(n_jobs)
        self.glop_dtime = glop_dtime(left)  # the cap on each GLOP solve

    def meter(self) -> Work:
        """An unbounded budget that counts what a pass costs, to charge it here afterwards (`spend(m.spent)`)."""
        m = Work(math.inf, 0)
        m.forecast, m.glop_dtime = self.forecast, self.glop_dtime
        return m

    def spend(self, units: float) -> None:
        self.left -= units
        self.spent += units

    def affords(self, units: float) -> bool:
        return self.left >= units
