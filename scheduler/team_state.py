"""What the loop knows of teams between cycles: each budget line's spend in its open period and what running jobs
have committed, the warnings already given, on-prem quota in use, and fair-share usage decayed over time."""

from __future__ import annotations

import math
from collections.abc import Iterable

from spillover.placement import Budget as PlacedBudget
from spillover.placement import CloudCap, Quota
from spillover.providers.contract import ClusterState, JobPhase
from spillover.scheduler.budgets import ONPREM, BudgetBook, BudgetStatus, budget_lines, lines_of, period_name
from spillover.scheduler.config import CloudCluster, SpilloverConfig
from spillover.scheduler.records import Job, LedgerEntry

HOUR = 3600.0
BUDGET_EVENTS = ("budget-warning", "budget-exhausted")


class TeamState:
    def __init__(self, config: SpilloverConfig) -> None:
        self.config = config
        self.lines = budget_lines(config)
        self.book = BudgetBook(self.lines)
        self.quota_teams = [t for t in config.teams if t.quota is not None]
        self.capped_teams = [t for t in config.teams if t.max_cloud_gpus is not None]
        self.weights = {t.name: t.weight for t in config.teams}
        self.half_life_s = config.fair_share.half_life_s
        self.usage: dict[str, float] = {}  # team -> on-prem GPU-hours, decayed to `usage_at`
        self.usage_at: float | None = None
        self._said: set[tuple[str, float, str]] = set()  # (line, period start, state) already announced
        self._read_said: set[float] = set()  # period starts whose announcements were read from the store
        self._lines_of: dict[tuple[str, str], tuple[str, ...]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.lines or self.quota_teams or self.config.teams)

    def view(self, store, now: float, active: list[Job], states: dict[str, ClusterState],
             marks: dict[str, dict[str, float]], pending: Iterable[Job] = (),
             unwritten: Iterable[LedgerEntry] = (), lookup=None) -> TeamView:
        """Everything one decision needs of the teams, as of `now`. `unwritten`: ledger entries the cycle has made
        but not written yet (the marks have moved past them already); `lookup`: job id -> the Job, for finished jobs
        the clusters still show."""
        by_type, by_team = onprem_held(self.config, active)
        if self.config.teams:
            if self.usage_at is None:
                self.load_usage(store, now)
            else:
                self.advance_usage(now, by_team)
        statuses = self.budget_status(store, now, active, states, marks, unwritten, lookup)
        caps = self.cloud_caps(active) if self.capped_teams else ()
        return TeamView(self, statuses, self.quotas(by_type, pending) if self.quota_teams else (), caps)

    # ---- budgets ---------------------------------------------------------------------------------

    def budgets_of(self, team: str, queue: str) -> tuple[str, ...]:
        key = (team, queue)
        got = self._lines_of.get(key)
        if got is None:
            got = self._lines_of[key] = lines_of(self.lines, team, queue)
        return got

    def ledger(self, entries: Iterable[LedgerEntry]) -> None:
        """Ledger entries just written: spend of the open periods."""
        self.book.add(entries)

    def budget_status(self, store, now: float, active: list[Job], states: dict[str, ClusterState],
                      marks: dict[str, dict[str, float]], unwritten: Iterable[LedgerEntry] = (),
                      lookup=None) -> list[BudgetStatus]:
        """Every line in its open period, with what the jobs running or on their way would still cost and what the
        cycle charged but has not written (counted in neither the ledger nor, past the marks, the running jobs)."""
        if not self.lines:
            return []
        self.book.open(store, now)
        committed = self._committed(now, active, states, marks, lookup)
        unwritten = [e for e in unwritten if e.usd]
        out = []
        for s in self.book.status.values():
            s.committed = sum(usd for (team, queue, cloud), usd in committed.items()
                              if s.line.counts(team, queue, cloud))
            s.committed += sum(e.usd for e in unwritten
                               if s.start <= e.bucket < s.end and s.line.counts(e.team, e.queue, e.cloud))
            out.append(s)
        return out

    def _committed(self, now: float, active: list[Job], states: dict[str, ClusterState],
                   marks: dict[str, dict[str, float]], lookup=None) -> dict[tuple[str, str, str], float]:
        """(team, queue, cloud) -> dollars the ledger will get from the nodes' marks on: the active jobs to their
        expected end, and the jobs that finished but are still shown (their time past the marks is written only when
        they leave the view or at the hour) to their end."""
        out: dict[tuple[str, str, str], float] = {}

        def add(j: Job, hours: float) -> None:
            rate = self._rate(j)
            if rate is not None and hours > 0:
                key = (j.team, j.queue, rate[0])
                out[key] = out.get(key, 0.0) + rate[1] * hours

        cfg = self.config
        active_ids = set()
        for j in active:
            active_ids.add(j.id)
            if j.cluster is None:
                continue
            speed = cfg.speed(j.gpu_type) if j.gpu_type else 1.0
            run_s = j.remaining_s / speed
            state = states.get(j.cluster)
            status = state.jobs.get(j.id) if state is not None else None
            if status is not None and status.phase == JobPhase.RUNNING and status.started_at is not None:
                add(j, _past_marks(status, status.started_at + run_s, marks.get(j.cluster, {}), status.started_at))
            else:
                add(j, j.spec.nodes * run_s / HOUR)
        if lookup is not None:
            for name, state in states.items():
                for job_id, status in state.jobs.items():
                    if job_id in active_ids or status.started_at is None or status.phase == JobPhase.RUNNING:
                        continue
                    j = lookup(job_id)
                    if j is None or j.cluster != name:
                        continue
                    # a node without a mark has gone, its time written up to its last
                    end = status.finished_at if status.finished_at is not None else state.observed_at
                    add(j, _past_marks(status, end, marks.get(name, {})))
        return out

    def _rate(self, j: Job) -> tuple[str, float] | None:
        """(cloud, dollars per hour of one of its nodes) a job bills at where it is bound, if it bills at all."""
        cluster = self.config.cluster(j.cluster) if j.cluster else None
        if cluster is None:
            return None
        if isinstance(cluster, CloudCluster):
            pool = next((p for p in cluster.pools if p.name == j.pool), None)
            if pool is None:
                return None
            return (getattr(cluster.cloud, "value", cluster.cloud),
                    pool.price_per_hour * min(1.0, j.spec.gpus / pool.gpus_per_node))
        if not cluster.gpu_hour_cost:
            return None
        return ONPREM, cluster.gpu_hour_cost * j.spec.gpus

    def announcements(self, statuses: list[BudgetStatus], store=None) -> list[tuple[str, str]]:
        """(kind, message) for lines that crossed their warning threshold or ran out in this period, once each: also
        across restarts, as the events in `store` show."""
        out = []
        for s in statuses:
            state = s.state
            if state != "ok" and store is not None and s.start not in self._read_said:
                self._recall(store, s.start)
            if state == "ok" or (s.line.id, s.start, state) in self._said:
                continue
            self._said.add((s.line.id, s.start, state))
            if state == "warning":
                self._said.add((s.line.id, s.start, "warning"))
            used = s.spent + s.committed
            period = period_name(s.line.budget.period, s.start, s.end)
            if state == "exhausted":
                msg = (f"budget {s.line.id} exhausted for {period}: ${used:,.2f} spent or committed of "
                       f"${s.line.usd:,.2f}; its jobs wait on-prem")
            else:
                msg = (f"budget {s.line.id} at {used / s.line.usd:.0%} for {period}: ${used:,.2f} spent or committed "
                       f"of ${s.line.usd:,.2f} (warning at {s.line.budget.warn_at:.0%})")
            out.append(("budget-" + state, msg))
        return out

    def _recall(self, store, start: float) -> None:
        """What was announced since `start` (by an earlier process, perhaps): the line is the message's second word."""
        self._read_said.add(start)
        for e in store.events_of(BUDGET_EVENTS, start):
            words = e.message.split(" ")
            if len(words) > 1:
                self._said.add((words[1], start, e.kind.removeprefix("budget-")))

    # ---- quotas and fair share -------------------------------------------------------------------

    def quotas(self, held: dict[tuple[str, str], int], pending: Iterable[Job] = ()) -> tuple[Quota, ...]:
        """The teams' on-prem quotas, with the GPUs of each type their jobs hold now. A team lends none of its idle
        quota that its own waiting jobs could use: what it takes back is not lent out again meanwhile."""
        onprem_types = sorted({g.gpu_type for c in self.config.onprem_clusters for g in c.node_groups})
        wanted: dict[tuple[str, str], int] = {}
        for j in pending:
            for gpu_type in (t for t in onprem_types if not j.spec.gpu_types or t in j.spec.gpu_types):
                wanted[(j.team, gpu_type)] = wanted.get((j.team, gpu_type), 0) + j.spec.total_gpus
        out = []
        for t in self.quota_teams:
            for gpu_type in onprem_types:
                q = (t.quota or {}).get(gpu_type)
                nominal = q.nominal if q else 0
                used = held.get((t.name, gpu_type), 0)
                lending = q.lending_limit if q else None
                want = wanted.get((t.name, gpu_type), 0)
                if want:
                    spare = max(0, nominal - used - want)
                    lending = spare if lending is None else min(lending, spare)
                out.append(Quota(t.name, gpu_type, nominal, used, q.borrowing_limit if q else None, lending,
                                 t.cohort))
        return tuple(out)

    def cloud_caps(self, active: Iterable[Job]) -> tuple[CloudCap, ...]:
        """The teams' cloud GPU caps, with the GPUs their jobs hold (or are on their way to) in the cloud now."""
        clouds = {c.name for c in self.config.cloud_clusters}
        held: dict[str, int] = {}
        for j in active:
            if j.cluster in clouds:
                held[j.team] = held.get(j.team, 0) + j.spec.total_gpus
        return tuple(CloudCap(t.name, t.max_cloud_gpus, held.get(t.name, 0)) for t in self.capped_teams
                     if t.max_cloud_gpus is not None)

    def placed_budgets(self, statuses: list[BudgetStatus]) -> tuple[PlacedBudget, ...]:
        return tuple(PlacedBudget(s.line.id, s.room, s.line.cloud) for s in statuses)

    def load_usage(self, store, now: float) -> None:
        """Usage as the ledger has it, after a restart: on-prem GPU-hours of the last ten half-lives, decayed."""
        self.usage = {}
        for team, bucket, gpu_hours in store.ledger_usage(now - 10 * self.half_life_s, now, ONPREM):
            if team:
                age = max(0.0, now - (bucket + HOUR / 2))
                self.usage[team] = self.usage.get(team, 0.0) + gpu_hours * math.pow(0.5, age / self.half_life_s)
        self.usage_at = now

    def advance_usage(self, now: float, held_gpus: dict[str, int]) -> None:
        """Decay every team's usage to `now` and add the on-prem GPUs they held since the last call."""
        if self.usage_at is None:
            self.usage_at = now
            return
        dt = now - self.usage_at
        if dt <= 0:
            return
        decay = math.pow(0.5, dt / self.half_life_s)
        for team in list(self.usage):
            self.usage[team] *= decay
        # GPUs held over dt, integrated with the decay inside the interval
        gain = (self.half_life_s / math.log(2)) * (1 - decay) / HOUR
        for team, gpus in held_gpus.items():
            self.usage[team] = self.usage.get(team, 0.0) + gpus * gain
        self.usage_at = now

    def share(self, team: str) -> float:
        """A team's decayed on-prem GPU-hours per unit of weight: the lower, the sooner its jobs go."""
        return self.usage.get(team, 0.0) / self.weights.get(team, 1.0)

    def weight(self, team: str) -> float:
        return self.weights.get(team, 1.0)


def _past_marks(status, end: float, node_marks: dict[str, float], unmarked_from: float | None = None) -> float:
    """Node-hours of a job's nodes from their marks (or its start, if later) to `end`. A node with no mark bills from
    `unmarked_from` (its start, by default), or not at all when that is None."""
    start = status.started_at
    hours = 0.0
    for n in status.nodes:
        mark = node_marks.get(n, unmarked_from)
        if mark is not None:
            hours += max(0.0, end - max(start, mark))
    return hours / HOUR


class TeamView:
    """What one decision needs of the teams: quotas with their use, budgets with their room, each job's fields."""

    def __init__(self, state: TeamState, statuses: list[BudgetStatus], quotas: tuple[Quota, ...],
                 cloud_caps: tuple[CloudCap, ...] = ()) -> None:
        self.state = state
        self.statuses = statuses
        self.quotas = quotas
        self.cloud_caps = cloud_caps
        self.budgets = state.placed_budgets(statuses)
        self.fair = bool(state.config.teams)

    def demand(self, job: Job) -> dict:
        """JobDemand fields of a pending job: its team, the budgets it spends against, its team's fair share."""
        st = self.state
        out: dict = {}
        if self.quotas or self.fair or self.cloud_caps:
            out["team"] = job.team
        if self.fair:
            out["share"] = st.share(job.team)
            out["weight"] = st.weight(job.team)
        if st.lines:
            b = st.budgets_of(job.team, job.queue)
            if b:
                out["budgets"] = b
        return out


def onprem_held(config: SpilloverConfig, active: Iterable[Job]) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """GPUs that active jobs hold (or are on their way to) on-prem: by (team, GPU type), and by team."""
    by_type: dict[tuple[str, str], int] = {}
    by_team: dict[str, int] = {}
    onprem = {c.name: c for c in config.onprem_clusters}
    for j in active:
        c = onprem.get(j.cluster or "")
        if c is None:
            continue
        gpu_type = j.gpu_type or (c.node_groups[0].gpu_type if len({g.gpu_type for g in c.node_groups}) == 1
                                  else None)
        gpus = j.spec.total_gpus
        if gpu_type is not None:
            by_type[(j.team, gpu_type)] = by_type.get((j.team, gpu_type), 0) + gpus
        by_team[j.team] = by_team.get(j.team, 0) + gpus
    return by_type, by_team
