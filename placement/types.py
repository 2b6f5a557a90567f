"""Input and output types of the placement solver: a `PlacementProblem` goes in, a `Plan` comes out.

These types belong to `placement` alone; the scheduler translates its snapshot into them. Times are in
hours from "now" (the moment the problem was built), money in US dollars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal


@dataclass(frozen=True)
class JobDemand:
    """One pending job as the solver sees it.

    A job runs on one node (`nodes == 1`) or is a gang of `nodes` replicas that all run on one target,
    each replica on a node of its own that it takes whole (no other job shares a gang's node).
    """

    id: str
    gpus: int  # GPUs per replica (per node)
    runtime_h: float  # estimated runtime on the reference GPU (speed 1.0)
    value_of_time: float  # dollars one GPU-hour of delay is worth for this job
    nodes: int = 1
    cpu: float = 0.0  # cores per replica
    memory_gib: float = 0.0  # GiB per replica
    gpu_types: frozenset[str] = frozenset()  # allowed GPU types; empty means any
    priority: int = 0  # higher goes first in the on-prem forecast and on ties
    checkpointable: bool = False
    waited_h: float = 0.0  # time already spent pending; older jobs go first among equals
    allowed_targets: frozenset[str] | None = None  # None means every target the policy allows
    team: str | None = None  # whose on-prem quota it uses (see `Quota`)
    budgets: tuple[str, ...] = ()  # ids of the budgets its cloud cost counts against (see `Budget`)
    # fair share: its team's decayed GPU-hours per unit of weight; None when teams share nothing by weight
    share: float | None = None
    weight: float = 1.0  # its team's fair-share weight

    @property
    def total_gpus(self) -> int:
        return self.gpus * self.nodes


@dataclass(frozen=True)
class Node:
    """A node of a target with what is still free on it.

    `ready_in_h > 0` marks a node that is provisioning: a job placed there starts when it is ready.
    """

    name: str
    free_gpus: int
    free_cpu: float
    free_memory_gib: float
    ready_in_h: float = 0.0
    idle: bool = False  # runs nothing (gang replicas need an idle node: they take nodes whole)


@dataclass(frozen=True)
class Release:
    """A forecast: a running job ends `at_h` hours from now and frees this much on `node`."""

    at_h: float
    node: str
    gpus: int
    cpu: float = 0.0
    memory_gib: float = 0.0


@dataclass(frozen=True)
class Target:
    """A place a job can run: an on-prem cluster or one cloud node pool.

    On-prem targets have a fixed set of nodes; cloud pools may also add up to `max_new_nodes` nodes of
    their instance type, each ready after `provisioning_h`.
    """

    id: str
    kind: Literal["onprem", "cloud"]
    gpu_type: str
    gpus_per_node: int
    cpu_per_node: float
    memory_gib_per_node: float
    price_per_node_h: float  # cloud: instance price; on-prem: amortized price of a node-hour (often 0)
    nodes: tuple[Node, ...] = ()
    speed: float = 1.0  # throughput relative to the reference GPU; runtime here = runtime_h / speed
    max_new_nodes: int = 0
    provisioning_h: float = 0.0
    releases: tuple[Release, ...] = ()  # on-prem: when running jobs are expected to free capacity
    spot: bool = False
    cloud: str | None = None
    region: str | None = None
    label: str = ""  # human name used in reasons, e.g. "aws-us-east-1/p4d-spot"

    @property
    def name(self) -> str:
        return self.label or self.id


@dataclass(frozen=True)
class Quota:
    """A team's on-prem GPUs of one type, as a Kueue ClusterQueue's quota of one flavor in a cohort.

    The team may hold `nominal` GPUs of the type on on-prem targets; above that it borrows what teams of its cohort
    leave idle of their nominal quota (each lends at most its `lending_limit`), up to its own `borrowing_limit`
    (None: no limit). A team with no cohort never borrows. A team with quotas for some types has none (nominal 0)
    for the others; a team with no `Quota` at all is not limited.
    """

    team: str
    gpu_type: str
    nominal: int
    used: int = 0  # GPUs of this type its jobs hold on-prem now, before the plan
    borrowing_limit: int | None = None
    lending_limit: int | None = None
    cohort: str | None = None


@dataclass(frozen=True)
class Budget:
    """Dollars that the cloud runs of the jobs counted against it may still commit (their run cost), on one cloud
    or on all; `room` is what is left of the period's budget after the spend so far and what already runs."""

    id: str
    room: float
    cloud: str | None = None  # None: every cloud


@dataclass(frozen=True)
class CloudCap:
    """At most `gpus` GPUs of one team's jobs in the cloud at once; `used` is what its jobs hold there now."""

    team: str
    gpus: int
    used: int = 0


@dataclass(frozen=True)
class Policy:
    """Whole-queue limits and weights, and how long the search may go on.

    `time_limit_s` bounds a decision by wall-clock time. `work_limit`, when set, bounds it by work instead,
    and the same problem then always gives the same plan, however loaded the machine (replays, tests):
    `time_limit_s` is ignored for decisions and no clock is read to make one. A work unit is about a second of
    the solver's work on the 2-core machine whose timings calibrate placement/work.py; the whole decision,
    greedy's pass included, keeps to the budget. CP-SAT rounds run on one worker with a fixed seed and no
    wall-clock limit, each getting its share of the budget as CP-SAT deterministic time
    (`max_deterministic_time`) and charged what CP-SAT reports having used; the LP search charges each step
    its modelled work (from the LP's own counts) and takes another while the budget covers one; GLOP runs
    with no time limit, only a generous cap on its own deterministic time. Rounds and steps stop when the
    budget runs out, not the clock, and nothing learnt from timings is used. The plan is never worse than
    greedy's, as with `time_limit_s`. What repeats is the plan for one OR-Tools build on one kind of CPU:
    another release or instruction set may take another search path.
    """

    max_cloud_gpus: int | None = None  # cap on GPUs across all cloud nodes (existing + new); None = no cap
    cloud_gpus_in_use: int = 0  # GPUs of cloud nodes that exist or are provisioning now
    idle_h: float = 0.0  # a new cloud node idles this long after its last job before it scales down
    max_wait_h: float = 168.0  # a job that fits no target waits at most this long in cost terms
    prefer_spot_for_checkpointable: bool = True
    spot_for_non_checkpointable: bool = False  # may a job that cannot checkpoint run on spot?
    time_limit_s: float = 2.0
    relative_gap: float = 0.01
    # When set, the search is bounded by this much work (units of about a second, see above) rather than by
    # wall-clock time, and the same problem always gives the same plan; `time_limit_s` is then ignored.
    work_limit: float | None = None
    # `solve` attaches the LP bound (plan.lower_bound, plan.gap) to every plan; a caller that does not log the
    # gap each cycle, such as a replay that solves thousands of times, can skip its cost.
    compute_bound: bool = True
    quotas: tuple[Quota, ...] = ()  # on-prem GPU quotas of teams (see `Quota`)
    budgets: tuple[Budget, ...] = ()  # dollar limits on cloud runs (see `Budget`)
    cloud_caps: tuple[CloudCap, ...] = ()  # per-team caps on cloud GPUs (see `CloudCap`)

    @property
    def team_limits(self) -> bool:
        """Whether any quota, budget or team cap holds jobs back: the ledger then checks each binding."""
        return bool(self.quotas or self.budgets or self.cloud_caps)


@dataclass(frozen=True)
class PlacementProblem:
    jobs: tuple[JobDemand, ...]
    targets: tuple[Target, ...]
    policy: Policy = field(default_factory=Policy)


class Action(str, Enum):
    START = "start"  # run now on an on-prem target
    BURST = "burst"  # run now (or once new nodes are ready) on a cloud pool
    WAIT = "wait"  # stay in the queue


@dataclass(frozen=True)
class Decision:
    """What to do with one job, and why, in words a user can read."""

    job_id: str
    action: Action
    reason: str
    target: str | None = None  # target id for START and BURST
    nodes: tuple[str, ...] = ()  # node names the replicas are bound to (new nodes are named "<target>/new-<i>")
    start_h: float = 0.0  # expected start: 0 now, provisioning delay, or the forecast on-prem start when waiting
    cost: float = 0.0  # expected dollars: run cost plus value of the delay
    wait_target: str | None = None  # on WAIT: the on-prem target the forecast expects it to start on
    # on WAIT, what holds it back first: "quota", "budget", "capacity", "policy" (a cap the policy sets) or "cost"
    # (it could run now, but waiting is cheaper)
    pending: str = ""


@dataclass(frozen=True)
class Plan:
    decisions: tuple[Decision, ...]
    new_nodes: dict[str, int]  # target id -> nodes to add now
    objective: float  # total expected dollars of the plan (run costs + delay values + new-node overhead)
    # a lower bound on the objective when computed: the LP relaxation's, or the objective itself when proven optimal
    lower_bound: float | None
    solver: Literal["cp-sat", "greedy", "baseline"]
    status: str  # "optimal", "feasible", "greedy-fallback", ...
    solve_s: float
    # decide again after this many hours even if nothing else changes (a wait deadline that falls due)
    revisit_h: float | None = None

    def decision(self, job_id: str) -> Decision:
        for d in self.decisions:
            if d.job_id == job_id:
                return d
        raise KeyError(job_id)

    @property
    def gap(self) -> float | None:
        if self.lower_bound is None or self.objective <= 0:
            return None
        return max(0.0, (self.objective - self.lower_bound) / self.objective)
