"""The LP relaxation by column generation equals the LP over every option, its bound is valid when cut short,
and the search for huge queues returns valid plans never worse than greedy's."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spillover.placement.cpsat as cpsat
import spillover.placement.relax as relax
from spillover.placement import PlacementProblem, check_plan, solve, solve_greedy
from spillover.placement.assemble import finish
from spillover.placement.bound import alone_wait_costs
from spillover.placement.greedy import greedy_settled
from spillover.placement.relax import LinearModel
from spillover.placement.rounding import bind_relaxation
from test_placement_fastpaths import problems
from test_placement_solver import queue

SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def priced_in_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small problems are solved over every option at once; here they go through the pricing rounds too."""
    monkeypatch.setattr(relax, "SMALL_COLUMNS", 0)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


@SETTINGS
@given(problems(max_jobs=12), st.booleans())
def test_column_generation_reaches_the_lp_over_every_option(p: PlacementProblem, alone: bool) -> None:
    waits = alone_wait_costs(p) if alone else greedy_settled(p).wait_costs
    m = LinearModel(p)
    everything = m.solve(waits, everything=True)
    assert everything is not None
    # one option per class to start from, then pricing: the same optimum
    first = m.solve(waits, duals=everything.duals * 0.0)
    assert first is not None and close(first.value, everything.value)
    # from the duals of another pricing, as the search does
    again = m.solve([w * 1.1 for w in waits], duals=everything.duals)
    assert again is not None and close(again.value, m.solve([w * 1.1 for w in waits], everything=True).value)


@SETTINGS
@given(problems(max_jobs=12))
def test_a_relaxation_cut_short_still_bounds_the_optimum(p: PlacementProblem) -> None:
    waits = greedy_settled(p).wait_costs
    m = LinearModel(p)
    exact = m.solve(waits, everything=True)
    short = m.solve(waits, duals=exact.duals * 0.0, max_rounds=1)
    assert exact is not None and short is not None
    assert short.value <= exact.value + 1e-6 * max(1.0, abs(exact.value))
    assert short.primal >= exact.value - 1e-6 * max(1.0, abs(exact.value))


@SETTINGS
@given(problems(max_jobs=12))
def test_roundings_of_the_relaxation_and_of_its_rough_stand_in_are_valid(p: PlacementProblem) -> None:
    waits = greedy_settled(p).wait_costs
    m = LinearModel(p)
    for lp in (m.solve(waits), m.rough(waits)):
        assert lp is not None
        ledger = bind_relaxation(p, lp, waits)
        for i, (ti, names) in ledger.binding.items():
            assert len(names) == p.jobs[i].nodes
        settled = finish(p, ledger, "cp-sat", "lp-rounded")
        assert check_plan(p, settled.plan) == []


def test_a_huge_queue_starts_from_a_scaled_sample_and_reaches_the_same_optimum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = queue(120)
    waits = greedy_settled(p).wait_costs
    exact = LinearModel(p).solve(waits, everything=True)
    monkeypatch.setattr(relax, "SAMPLE_ABOVE", 10)
    monkeypatch.setattr(relax, "SAMPLE_SIZE", 20)
    monkeypatch.setattr(relax, "DIRECT_COLUMNS", 0)
    m = LinearModel(p)
    sampled = m.solve(waits, gap_tol=1e-9)
    assert exact is not None and sampled is not None
    assert close(sampled.value, exact.value)
    rough = m.rough(waits)
    assert rough is not None and rough.rounds == 0 and rough.runs
    settled = finish(p, bind_relaxation(p, rough, waits), "cp-sat", "lp-rounded")
    assert check_plan(p, settled.plan) == []


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(problems(max_jobs=12))
def test_the_search_for_huge_queues_is_valid_and_never_worse_than_greedy(p: PlacementProblem) -> None:
    saved = cpsat.CPSAT_MAX_PAIRS
    cpsat.CPSAT_MAX_PAIRS = 0
    try:
        plan = solve(p)
    finally:
        cpsat.CPSAT_MAX_PAIRS = saved
    assert check_plan(p, plan) == []
    assert plan.objective <= solve_greedy(p).objective + 1e-6
    assert plan.lower_bound is not None and plan.lower_bound <= plan.objective + 1e-6 * max(1.0, plan.objective)


def test_a_short_time_limit_still_gives_a_valid_plan_and_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpsat, "CPSAT_MAX_PAIRS", 0)
    p = queue(200)
    p = replace(p, policy=replace(p.policy, time_limit_s=0.3))
    plan = solve(p)
    assert check_plan(p, plan) == []
    assert plan.objective <= solve_greedy(p).objective + 1e-6
    assert plan.lower_bound is not None and plan.lower_bound <= plan.objective + 1e-6 * max(1.0, plan.objective)
