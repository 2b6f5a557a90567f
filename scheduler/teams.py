"""Teams in the config: on-prem GPU quotas shared in cohorts, fair-share weights, dollar budgets per period, and
the preemption rules that hand borrowed GPUs back."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, model_validator
from pydantic_core import InitErrorDetails

from spillover.scheduler.errors import custom_error
from spillover.scheduler.model import Cloud

Name = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuQuota(_Model):
    """A team's on-prem GPUs of one type, as a Kueue ClusterQueue's quota of one flavor."""

    nominal: Annotated[int, Field(ge=0)] = Field(description="GPUs of this type the team is guaranteed on-prem")
    borrowing_limit: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="GPUs above nominal it may borrow from its cohort's idle quota; null: no limit")
    lending_limit: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="GPUs of its idle nominal quota the cohort may borrow; null: all of it")


class Budget(_Model):
    """Dollars a team (or queue) may spend per period: the ledger's spend so far, what runs in the cloud and what
    the plan would burst must stay inside it."""

    usd: NonNegativeFloat = Field(description="dollars per period")
    period: Literal["day", "week", "month", "window"] = Field(
        default="month", description="calendar periods in UTC (weeks start on Monday), or one fixed window")
    start: datetime | None = Field(default=None, description="period: window: when it opens (ISO 8601)")
    end: datetime | None = Field(default=None, description="period: window: when it closes (ISO 8601)")
    warn_at: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.8, description="fraction of the budget spent at which a warning event is written")
    clouds: dict[Cloud, NonNegativeFloat] = Field(
        default_factory=dict, description="dollars per period on one cloud, inside the budget (optional)")
    count_onprem: bool = Field(
        default=True, description="on-prem use counts at its cluster's gpu_hour_cost; false: cloud spend only")

    @model_validator(mode="after")
    def _window(self) -> Budget:
        if self.period == "window":
            if self.start is None or self.end is None:
                raise ValueError("period: window needs start and end (ISO 8601 times)")
            if _utc(self.end) <= _utc(self.start):
                raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        elif self.start is not None or self.end is not None:
            raise ValueError(f"start and end are for period: window only (period is {self.period})")
        for cloud, usd in self.clouds.items():
            if usd > self.usd:
                raise ValueError(f"clouds.{cloud.value} ({usd:g}) is more than the whole budget ({self.usd:g})")
        return self

    def period_of(self, t: float) -> tuple[float, float] | None:
        """The [start, end) epoch seconds of the period holding `t`; None outside a fixed window."""
        if self.period == "window":
            s, e = _utc(self.start).timestamp(), _utc(self.end).timestamp()  # type: ignore[arg-type]
            return (s, e) if s <= t < e else None
        return calendar_period(self.period, t)


def calendar_period(period: str, t: float) -> tuple[float, float]:
    """The UTC day, week (from Monday) or month holding epoch second `t`."""
    d = datetime.fromtimestamp(t, timezone.utc)
    day = d.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = start + timedelta(days=calendar.monthrange(start.year, start.month)[1])
    return start.timestamp(), end.timestamp()


def _utc(d: datetime | None) -> datetime:
    assert d is not None
    return d if d.tzinfo is not None else d.replace(tzinfo=timezone.utc)


class TeamConfig(_Model):
    """A team: who its queues charge, what on-prem GPUs it is guaranteed and may borrow, its share and budget."""

    name: Name
    cohort: Name | None = Field(
        default=None, description="teams of one cohort lend each other idle quota; null: the team borrows nothing")
    weight: PositiveFloat = Field(default=1.0, description="fair-share weight of on-prem capacity over time")
    quota: dict[Name, GpuQuota] | None = Field(
        default=None, description="on-prem GPUs per GPU type; a type not listed has nominal 0 (borrow only); "
        "null: no quota, the team may use any free on-prem GPU")
    budget: Budget | None = Field(default=None, description="dollars per period; null: no budget")
    max_cloud_gpus: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="GPUs the team's jobs may hold in the cloud at once; null: only the policy's cap")


class FairShare(_Model):
    """How on-prem capacity is shared between teams over time."""

    half_life_s: PositiveFloat = Field(
        default=7 * 86400.0, description="seconds after which a GPU-hour used counts half in a team's usage")


class Preemption(_Model):
    """When running on-prem jobs are stopped to hand capacity back."""

    enabled: bool = Field(default=True, description="a team below its quota, or a job of higher priority, may "
                          "preempt borrowed checkpointable jobs on-prem")
    max_per_hour: Annotated[int, Field(ge=0)] = Field(default=20, description="preemptions in any hour at most")
    min_runtime_s: NonNegativeFloat = Field(
        default=300.0, description="a job that has run less than this is not preempted (it has not checkpointed)")
    priority_gap: Annotated[int, Field(ge=1)] = Field(
        default=100, description="a job preempts another of its team's cohort only with at least this much more "
        "priority")


def check_teams(config: Any) -> list[InitErrorDetails]:
    """Errors that look across teams, queues and clusters: a team no queue names, quota for a GPU type no on-prem
    cluster has, more nominal quota than there are GPUs, borrowing or lending without a cohort, a lone cohort."""
    errors: list[InitErrorDetails] = []
    onprem: dict[str, int] = {}
    for c in config.onprem_clusters:
        for g in c.node_groups:
            onprem[g.gpu_type] = onprem.get(g.gpu_type, 0) + g.count * g.gpus_per_node
    named = {q.team for q in config.queues}
    cohorts: dict[str, list[str]] = {}
    nominal: dict[str, list[int]] = {}
    for i, team in enumerate(config.teams):
        if team.name not in named:
            errors.append(custom_error(("teams", i, "name"), f"no queue names team '{team.name}' (queues: "
                                       + ", ".join(f"{q.name} -> {q.team}" for q in config.queues)
                                       + "); set team: on a queue", team.name))
        if team.cohort is not None:
            cohorts.setdefault(team.cohort, []).append(team.name)
        for gpu_type, q in (team.quota or {}).items():
            loc = ("teams", i, "quota", gpu_type)
            if gpu_type not in onprem:
                errors.append(custom_error(loc, f"no on-prem cluster has GPU type '{gpu_type}' (on-prem types: "
                                           f"{', '.join(sorted(onprem)) or 'none'})", gpu_type))
                continue
            nominal.setdefault(gpu_type, []).append(q.nominal)
            if team.cohort is None and (q.borrowing_limit or q.lending_limit):
                which = "borrowing_limit" if q.borrowing_limit else "lending_limit"
                errors.append(custom_error((*loc, which), f"{which} needs the team in a cohort (set cohort: on "
                                           f"team '{team.name}')", getattr(q, which)))
            if q.nominal > onprem[gpu_type]:
                errors.append(custom_error((*loc, "nominal"), f"{q.nominal} {gpu_type} GPUs is more than on-prem "
                                           f"has ({onprem[gpu_type]})", q.nominal))
    for gpu_type, values in nominal.items():
        if sum(values) > onprem[gpu_type]:
            errors.append(custom_error(("teams",), f"nominal quotas of {gpu_type} add up to {sum(values)} GPUs, more "
                                       f"than on-prem has ({onprem[gpu_type]})", sum(values)))
    for cohort, members in cohorts.items():
        if len(members) < 2:
            i = next(k for k, t in enumerate(config.teams) if t.cohort == cohort)
            errors.append(custom_error(("teams", i, "cohort"), f"cohort '{cohort}' has only team '{members[0]}'; "
                                       "a cohort lends between two teams or more", cohort))
    for i, q in enumerate(config.queues):
        team = config.team(q.team) if q.team else None
        if q.budget is not None and team is not None and team.budget is not None and q.budget.usd > team.budget.usd:
            errors.append(custom_error(("queues", i, "budget", "usd"), f"{q.budget.usd:g} is more than team "
                                       f"'{team.name}''s budget ({team.budget.usd:g})", q.budget.usd))
    return errors
