"""Cost accrual: node time charged to the ledger per hour bucket, node and job. Each node has a mark (how far its
time is in the ledger); its time is written when something changes what it bills — a job leaves it (the cluster
no longer shows it), the node goes — and at the end of every hour, not every cycle.

Between two writes of a node no job left it, so its time since its mark is exactly what the newest observation
shows: jobs that started meanwhile carry their start times, jobs that ended their end times (a cluster shows a
finished job until it is removed, and a removal is a write). A node's mark is written the cycle it appears, its
last time the cycle it goes. A crash loses only what was not written yet, and that is charged again from the marks
the store kept by the first observation after a restart, of the nodes and finished jobs it still shows.
"""

from __future__ import annotations

import math

from spillover.providers.contract import ClusterState
from spillover.scheduler.context import LoopContext
from spillover.scheduler.costs import HOUR, ledger_entries
from spillover.scheduler.store import Job


class Accrual:
    def __init__(self, ctx: LoopContext) -> None:
        self.ctx = ctx
        self._last: dict[str, ClusterState] = {}  # the newest observation of each cluster
        self._jobs = _Known(ctx)

    def step(self, states: dict[str, ClusterState], *, force: bool = False) -> None:
        """Charge what is due on each observed cluster: nodes that went, nodes a job left, nodes whose mark is in
        an earlier hour, and every node when `force`."""
        ctx = self.ctx
        for name, state in states.items():
            prev = self._last.get(name)
            self._last[name] = state
            marks = ctx.state.marks.setdefault(name, {})
            now = state.observed_at
            cfg = ctx.config.cluster(name)
            if prev is None or prev is state:
                h = ctx.state.cluster(name)
                # first sight of a node: it bills from the last observation the store knows of (a node that came
                # after a scale-up and before a restart), or from now
                start = h.last_observed_at if h.last_observed_at is not None and h.last_observed_at < now else now
                for n in state.nodes:
                    if n.name not in marks:
                        ctx.journal.mark(name, n.name, start)
                gone = set(marks) - {n.name for n in state.nodes}
                for n in gone:  # went while no one looked: its time since the mark cannot be known
                    ctx.journal.mark(name, n, None)
            elif prev.nodes is not state.nodes or prev.jobs is not state.jobs:  # (the same objects: nothing changed)
                prev_t = prev.observed_at
                nodes_now = {n.name for n in state.nodes}
                nodes_before = {n.name for n in prev.nodes}
                left = [st for jid, st in prev.jobs.items() if jid not in state.jobs]
                # up to the last observation, with the nodes and jobs it had: nodes that went, nodes a job left
                due = {n for n in nodes_before - nodes_now if n in marks}
                due |= {n for st in left for n in st.nodes if n in marks}
                due = {n: marks[n] for n in due if marks[n] < prev_t}
                if due:
                    ctx.journal.ledger(ledger_entries(cfg, prev, 0.0, prev_t, self._jobs, due))
                    for n in due:
                        ctx.journal.mark(name, n, prev_t)
                for n in nodes_before - nodes_now:
                    if n in marks:
                        ctx.journal.mark(name, n, None)
                for n in nodes_now - nodes_before:
                    if n not in marks:  # came since the last observation: billed from then, as the cloud bills
                        ctx.journal.mark(name, n, prev_t)
            hour = math.floor(now / HOUR)
            due = {n.name: marks[n.name] for n in state.nodes if n.name in marks and marks[n.name] < now
                   and (force or math.floor(marks[n.name] / HOUR) != hour)}
            if due:
                ctx.journal.ledger(ledger_entries(cfg, state, 0.0, now, self._jobs, due))
                for n in due:
                    ctx.journal.mark(name, n, now)
            h = ctx.state.cluster(name)
            if h.accrued_until is None or due or force:
                h.accrued_until = h.last_observed_at = now
                ctx.journal.cluster(h)

    def resized(self, cluster: str, pool: str, grow: bool) -> None:
        """Before a pool is resized: a pool about to shrink has its nodes' time written up to this cycle's
        observation, which is where a run that never stops bills a removed node to; before it grows, the store
        learns this observation's time, from which its new nodes bill should the process die before it sees them."""
        ctx = self.ctx
        state = ctx.states.get(cluster)
        if state is None:
            return
        h = ctx.state.cluster(cluster)
        now = state.observed_at
        if grow:
            h.last_observed_at = now
            ctx.journal.cluster(h)
            return
        marks = ctx.state.marks.setdefault(cluster, {})
        due = {n.name: marks[n.name] for n in state.nodes if n.pool == pool and n.name in marks and marks[n.name] < now}
        if due:
            ctx.journal.ledger(ledger_entries(ctx.config.cluster(cluster), state, 0.0, now, self._jobs, due))
            for n in due:
                ctx.journal.mark(cluster, n, now)

    def flush(self) -> None:
        """Charge everything observed so far (at shutdown, or at the end of a replay)."""
        self.step(dict(self._last), force=True)


class _Known:
    """The jobs the ledger may meet on a node: those in memory and those that finished lately."""

    def __init__(self, ctx: LoopContext) -> None:
        self.state = ctx.state

    def get(self, job_id: str) -> Job | None:
        return self.state.lookup(job_id)
