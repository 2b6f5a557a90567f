"""Team quotas, dollar budgets and team cloud GPU caps as the ledger sees them: what a plan has taken of each, and
whether one more job fits inside them."""

from __future__ import annotations

from spillover.placement.costs import run_cost
from spillover.placement.types import JobDemand, PlacementProblem, Target

EPS = 1e-9


class Limits:
    """Usage of every team's quota per GPU type, of every budget and of every team cloud cap, as jobs are bound and
    unbound."""

    def __init__(self, problem: PlacementProblem) -> None:
        policy = problem.policy
        self.quota = {(q.team, q.gpu_type): q for q in policy.quotas}
        self.quota_teams = {q.team for q in policy.quotas}
        self.used = {(q.team, q.gpu_type): q.used for q in policy.quotas}
        self.members: dict[tuple[str, str], list[str]] = {}
        for q in policy.quotas:
            if q.cohort is not None:
                self.members.setdefault((q.cohort, q.gpu_type), []).append(q.team)
        self.budgets = {b.id: b for b in policy.budgets}
        self.spent = {b.id: 0.0 for b in policy.budgets}
        self.caps = {c.team: c.gpus for c in policy.cloud_caps}
        self.cloud_used = {c.team: c.used for c in policy.cloud_caps}

    def limits(self, job: JobDemand) -> bool:
        """Whether anything here can hold `job` back."""
        return job.team in self.quota_teams or bool(job.budgets) or job.team in self.caps

    def blocks(self, job: JobDemand, t: Target) -> str | None:
        """"quota", "budget" or "team-cap" when running `job` on `t` would go past one; None when it fits."""
        if t.kind == "onprem":
            if job.team in self.quota_teams and not self._quota_admits(job.team, t.gpu_type, job.total_gpus):
                return "quota"
            return None
        cap = self.caps.get(job.team or "")
        if cap is not None and self.cloud_used[job.team or ""] + job.total_gpus > cap:
            return "team-cap"
        if job.budgets:
            cost = run_cost(job, t)
            for bid in job.budgets:
                b = self.budgets.get(bid)
                if b is not None and (b.cloud is None or b.cloud == t.cloud) and self.spent[bid] + cost > b.room + EPS:
                    return "budget"
        return None

    def _quota_admits(self, team: str, gpu_type: str, gpus: int) -> bool:
        q = self.quota.get((team, gpu_type))
        if q is None:
            return False  # a team with quotas has none of a type it does not list
        used = self.used[(team, gpu_type)]
        after = used + gpus
        if after <= q.nominal:
            return True  # its own quota; borrowers of it are preempted, not this job held back
        if q.cohort is None:
            return False
        if q.borrowing_limit is not None and after > q.nominal + q.borrowing_limit:
            return False
        borrowed = lendable = 0
        for member in self.members[(q.cohort, gpu_type)]:
            m = self.quota[(member, gpu_type)]
            u = after if member == team else self.used[(member, gpu_type)]
            borrowed += max(0, u - m.nominal)
            idle = max(0, m.nominal - u)
            lendable += idle if m.lending_limit is None else min(m.lending_limit, idle)
        return borrowed <= lendable

    def charge(self, job: JobDemand, t: Target, sign: int) -> None:
        """Count `job` on `t` in (sign 1) or out (sign -1)."""
        if t.kind == "onprem":
            key = (job.team or "", t.gpu_type)
            if key in self.used:
                self.used[key] += sign * job.total_gpus
            return
        if job.team in self.caps:
            self.cloud_used[job.team or ""] += sign * job.total_gpus
        if job.budgets:
            cost = run_cost(job, t)
            for bid in job.budgets:
                b = self.budgets.get(bid)
                if b is not None and (b.cloud is None or b.cloud == t.cloud):
                    self.spent[bid] += sign * cost

    def detail(self, job: JobDemand, kind: str, t: Target) -> str:
        """What a `blocks` verdict was about, in words for the job's reason."""
        if kind == "quota":
            q = self.quota.get((job.team or "", t.gpu_type))
            if q is None:
                return f"team {job.team} has no {t.gpu_type} quota"
            used = self.used[(job.team or "", t.gpu_type)]
            return (f"team {job.team} holds {used} of its {q.nominal} {t.gpu_type} GPUs"
                    + ("" if q.cohort is None else f" and its cohort {q.cohort} has none idle to lend"))
        if kind == "team-cap":
            team = job.team or ""
            return (f"team {team} holds {self.cloud_used[team]} of its {self.caps[team]} cloud GPUs, "
                    f"the job needs {job.total_gpus}")
        cost = run_cost(job, t)
        for bid in job.budgets:
            b = self.budgets.get(bid)
            if b is not None and (b.cloud is None or b.cloud == t.cloud) and self.spent[bid] + cost > b.room + EPS:
                left = max(0.0, b.room - self.spent[bid])
                return f"budget {bid} has ${left:,.2f} left, the cheapest cloud run costs ${cost:,.2f}"
        return kind
