"""`spillover simulate`: replay a workload against a config under Spillover's solver and the baseline burst
rules, over sweeps of each policy's knob, and write the results (JSON, CSV) and a Pareto plot of the measured
window's cloud GPU-hours against its average job completion time."""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spillover.scheduler.clock import SimClock
from spillover.scheduler.config import SpilloverConfig, parse_config
from spillover.scheduler.errors import UserError
from spillover.scheduler.store import Store
from spillover.scheduler.wiring import build_providers
from spillover.simulations.baselines import HINDSIGHT, LABELS, POLICIES, baseline_solver, rule
from spillover.simulations.metrics import RunMetrics, measure
from spillover.simulations.runner import run_simulation
from spillover.simulations.team_report import budget_rows, team_rows
from spillover.simulations.workloads import Replay

# Each policy's knob, and the values a sweep takes when none is given.
KNOBS = {"spillover": "value_of_time", "spillover-job": "value_of_job_time", "constant-wait": "wait_h",
         "compute-wait": "k"}
DEFAULT_SWEEPS = {
    "value_of_time": [0.5, 1.0, 2.0, 4.0, 8.0, 16.0],  # dollars one GPU-hour of waiting is worth
    "value_of_job_time": [2.0, 4.0, 8.0, 16.0, 32.0, 64.0],  # dollars one hour of a job's waiting is worth
    "wait_h": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0],  # Constant-Wait's T
    "k": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0],  # Compute-Wait: wait at most k x GPUs x runtime
}
QUEUES = ("fifo", "easy")
# Solver work per decision in replays (units of about a second on the 2-core reference machine; see Policy): as long
# as the production 2 s limit takes, and the same plans on the placement benchmark's small problems.
REPLAY_WORK_LIMIT = 2.0


class SimulateError(UserError):
    """A bad option to `spillover simulate`."""


@dataclass(frozen=True)
class RunSpec:
    """One replay: a policy, its knob's value (if it has one) and, for baselines, the on-prem queue."""

    policy: str
    value: float | None = None
    queue: str = ""

    @property
    def knob(self) -> str | None:
        return KNOBS.get(self.policy)

    @property
    def setting(self) -> str:
        return f"{self.knob}={self.value:g}" if self.knob and self.value is not None else ""

    @property
    def label(self) -> str:
        parts = [self.policy] + ([self.queue] if self.queue else []) + ([self.setting] if self.setting else [])
        return " ".join(parts)


def parse_sweeps(items: Sequence[str]) -> dict[str, list[float]]:
    """`KNOB=v1,v2,...` options into {knob: values}; a bad one is a one-line error naming the valid knobs."""
    out: dict[str, list[float]] = {}
    knobs = sorted(set(KNOBS.values()))
    for item in items:
        knob, sep, values = item.partition("=")
        knob = knob.strip().replace("-", "_")
        if not sep or knob not in knobs:
            raise SimulateError(f"--sweep: expected KNOB=v1,v2,... with KNOB one of {', '.join(knobs)} (got {item!r})")
        try:
            vals = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise SimulateError(f"--sweep {knob}: values must be numbers separated by commas (got {values!r})") from None
        if not vals or any(not math.isfinite(v) or v < 0 for v in vals):
            raise SimulateError(f"--sweep {knob}: give one or more numbers >= 0 (got {values!r})")
        out[knob] = vals
    return out


def plan_runs(policies: Sequence[str], sweeps: dict[str, list[float]], queues: Sequence[str],
              config: SpilloverConfig) -> list[RunSpec]:
    """Every replay to make: one per policy x knob value (x queue discipline for the baselines)."""
    for p in policies:
        if p not in POLICIES:
            raise SimulateError(f"--policy: unknown policy {p!r}; valid: {', '.join(POLICIES)}")
    for q in queues:
        if q not in QUEUES:
            raise SimulateError(f"--queue: unknown discipline {q!r}; valid: {', '.join(QUEUES)}")
    runs: list[RunSpec] = []
    for p in policies:
        knob = KNOBS.get(p)
        if knob is None:
            values: list[float | None] = [None]
        elif knob in sweeps:
            values = list(sweeps[knob])
        elif p == "spillover":
            values = [config.policy.value_of_time_per_gpu_hour]
        elif p == "spillover-job" and config.policy.value_of_time_per_job_hour is not None:
            values = [config.policy.value_of_time_per_job_hour]
        else:
            values = list(DEFAULT_SWEEPS[knob])
        for v in values:
            for q in ([""] if p.startswith("spillover") else queues):
                runs.append(RunSpec(p, v, q))
    return runs


def with_queues(config: SpilloverConfig, queues: set[str], **policy: float) -> SpilloverConfig:
    """The config with every queue the workload names (missing ones inherit the policy's value of time),
    the policy changed as given, and a private in-memory store."""
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    known = {q["name"] for q in data["queues"]}
    data["queues"] += [{"name": q} for q in sorted(queues - known)]
    data["store"] = {"url": "sqlite://"}
    data["loop"]["solver_bound"] = False  # the plans, not their distance from the LP bound, make the results
    # a replay's numbers must not depend on how busy the machine is: decisions bounded by work, not time
    data["loop"].setdefault("solver_work_limit", REPLAY_WORK_LIMIT)
    data["policy"].update(policy)
    return parse_config(data, source="simulate", catalog=config.catalog)


def run_one(config: SpilloverConfig, replay: Replay, spec: RunSpec, *, estimates_exact: bool,
            progress: Callable[[float, int, int], None] | None = None) -> RunMetrics:
    """Replay the workload once under `spec` and measure it; a waiting rule's metrics carry its hindsight variant
    (`RunMetrics.hindsight`), booked from the same replay."""
    queues = {a.spec.queue for a in replay.arrivals}
    changes: dict[str, float] = {}
    if spec.policy == "spillover" and spec.value is not None:
        changes = {"value_of_time_per_gpu_hour": spec.value}
    elif spec.policy == "spillover-job" and spec.value is not None:
        changes = {"value_of_time_per_job_hour": spec.value}
    cfg = with_queues(config, queues, **changes)
    if spec.policy in ("spillover", "spillover-job"):
        solver = None
    else:
        knob = {"wait_h": spec.value or 0.0} if spec.policy == "constant-wait" else (
            {"k": spec.value or 0.0} if spec.policy == "compute-wait" else {})
        solver = baseline_solver(rule(spec.policy, **knob), spec.queue or "fifo")
    store = Store(cfg.store.url)
    clock = SimClock()
    providers = build_providers(cfg, clock, runtime=replay.runtime(cfg.speed))
    t0 = time.perf_counter()
    # with exact runtimes, time alone changes no decision: the loop re-plans on changes and on plans' revisits
    result = run_simulation(cfg, replay.arrivals, store, clock=clock, providers=providers, solver=solver,
                            progress=progress, resolve_every_s=math.inf if estimates_exact else None,
                            max_sim_s=_horizon_s(replay))
    metrics = measure(store, cfg, policy=spec.policy, setting=spec.setting, queue=spec.queue,
                      true_runtime_s=replay.true_runtime_s, hindsight_policy=HINDSIGHT.get(spec.policy))
    if cfg.teams or any(q.budget is not None for q in cfg.queues):
        metrics.teams = team_rows(store, cfg, result.started_at, result.ended_at)
        metrics.budgets = budget_rows(store, cfg, result.started_at, result.ended_at)
    for m in (metrics, metrics.hindsight):
        if m is not None:
            m.wall_s = time.perf_counter() - t0
            m.cycles, m.solves, m.solve_s = result.cycles, result.solves, result.solve_s
    store.close()
    return metrics


def with_hindsight(results: Sequence[RunMetrics]) -> list[RunMetrics]:
    """Every run followed by its hindsight variant, if it has one: the rows results and plots show."""
    out: list[RunMetrics] = []
    seen: set[int] = set()
    for r in results:
        for m in (r, r.hindsight):
            if m is not None and id(m) not in seen:  # a list that has them already stays as it is
                seen.add(id(m))
                out.append(m)
    return out


def label(r: RunMetrics) -> str:
    """A run's curve: its policy's name and, for the baselines, the on-prem queue."""
    name = LABELS.get(r.policy, r.policy)
    return f"{name} ({r.queue.upper()})" if r.queue else name


def _horizon_s(replay: Replay) -> float:
    """Long enough for every job to finish even if each ran alone after the last arrival."""
    last = max((a.at_s for a in replay.arrivals), default=0.0)
    return last + sum(replay.true_runtime_s.values()) + 86400.0


def write_results(out: Path, results: Sequence[RunMetrics], *, title: str,
                  marks: Sequence[tuple[float, float]] = (), marks_label: str = "") -> list[Path]:
    """results.json, results.csv and pareto.png in `out`; hindsight variants are rows of their own."""
    out.mkdir(parents=True, exist_ok=True)
    results = with_hindsight(results)
    rows = [r.row() for r in results]
    (out / "results.json").write_text(json.dumps({"title": title, "runs": rows}, indent=2) + "\n")
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    pareto_plot(results, out / "pareto.png", title=title, marks=marks, marks_label=marks_label)
    files = [out / "results.json", out / "results.csv", out / "pareto.png"]
    for name in ("teams", "budgets"):
        rows = [{"policy": r.policy, "setting": r.setting, "queue": r.queue, **x} for r in results
                for x in getattr(r, name)]
        if rows:
            with (out / f"{name}.csv").open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            files.append(out / f"{name}.csv")
    return files


def pareto_plot(results: Sequence[RunMetrics], path: Path, *, title: str,
                marks: Sequence[tuple[float, float]] = (), marks_label: str = "") -> None:
    """Cloud GPU-hours against average JCT over the measured window, one curve per policy (and queue discipline);
    hindsight variants are drawn dotted. `marks` are (JCT, cloud GPU-hours) points of another source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    curves: dict[str, list[RunMetrics]] = {}
    for r in with_hindsight(results):
        curves.setdefault(label(r), []).append(r)
    styles = {"spillover": ("tab:red", "o", 2.5), "spillover-job": ("tab:orange", "o", 2.5), "no-wait": ("tab:blue", "s", 1.2),
              "constant-wait": ("tab:green", "^", 1.2), "compute-wait": ("tab:purple", "D", 1.2),
              "constant-wait-hindsight": ("tab:olive", "^", 1.2), "compute-wait-hindsight": ("tab:pink", "D", 1.2),
              "onprem-only": ("tab:gray", "x", 1.2)}
    # on-prem only waits so long that, drawn to scale, it squeezes every bursting curve against the y axis
    bursting = [r.jct_avg_h for r in results if r.policy != "onprem-only"]
    right = max(bursting) * 1.08 if bursting else None
    for name, rs in sorted(curves.items()):
        rs = sorted(rs, key=lambda r: r.jct_avg_h)
        color, marker, width = styles.get(rs[0].policy, ("black", ".", 1.0))
        line = ":" if rs[0].policy.endswith("-hindsight") else "--" if rs[0].queue == "fifo" else "-"
        if right is not None and rs[0].policy == "onprem-only" and rs[0].jct_avg_h > 1.5 * right:
            ax.plot([], [], marker, color=color, label=f"{name}: {rs[0].jct_avg_h:,.1f} h, off the chart")
            continue
        # a setting replayed at several phases of the loop's tick: its replays faint, the curve through their mean
        by_setting: dict[str, list[RunMetrics]] = {}
        for r in rs:
            by_setting.setdefault(r.setting, []).append(r)
        if any(len(g) > 1 for g in by_setting.values()):
            ax.plot([r.jct_avg_h for r in rs], [r.cloud_gpu_hours_measured for r in rs], marker, color=color,
                    alpha=0.3, ms=4)
        pts = sorted((sum(r.jct_avg_h for r in g) / len(g), sum(r.cloud_gpu_hours_measured for r in g) / len(g), s)
                     for s, g in by_setting.items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], line, color=color, marker=marker, lw=width, label=name)
        for x, y, setting in pts:
            if setting:
                ax.annotate(setting.split("=")[1], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points",
                            color=color)
    if marks:
        ax.plot([m[0] for m in marks], [m[1] for m in marks], "x", color="black", ms=8, mew=1.5, label=marks_label)
    no_wait = [r for r in results if r.policy == "no-wait"]
    if no_wait:
        lb = max(r.lower_bound_measured_at_makespan for r in no_wait)
        ax.axhline(lb, color="black", lw=0.8, ls=":",
                   label=f"lower bound: on-prem 100% busy until No-Wait's last job ends ({lb:,.0f} GPU-h)")
    ax.set_xlabel("average job completion time, measured jobs (h)")
    ax.set_ylabel("cloud GPU-hours, measured jobs")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
