"""The LP relaxation of the placement model, built once per problem and solved by column generation (GLOP).

What the relaxation is (bound.py explains why it bounds every plan priced the same way): fractions of a job
may run on any ready-group of any target it fits; node fit is exact in GPUs (packing patterns over free-GPU
profiles, with LP counts) and summed per ready-group for CPU, memory and whole idle nodes for gangs; new nodes
of a pool are an LP count under its limit, paying their overhead, and all pools' new GPUs stay under the cap.

All options (class of jobs, ready-group) live in numpy arrays and go to GLOP in bulk. A queue of 10,000 jobs
has some 100,000 of them and GLOP takes over a second on them all, while the optimum uses one or two per
running job; so, from the duals of an earlier solve of the same model (whose waits are usually close), the
LP is solved over each class's few best options, every option is priced with the new duals (reduced cost =
cost - wait - duals of the rows it uses), those that would lower the objective join, and so on until none
would. Without earlier duals, a huge queue starts from those of a scaled sample of itself (`rough` even
stops there); small LPs are solved over every option at once. The value returned is always a valid bound:
the restricted optimum plus, for every class, its count times its most negative reduced cost (zero once no
option improves).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ortools.linear_solver.python import model_builder_helper as mbh

from spillover.placement.costs import new_node_cost
from spillover.placement.feasibility import feasible
from spillover.placement.forecast import EPS
from spillover.placement.patterns import maximal_patterns
from spillover.placement.types import JobDemand, Node, PlacementProblem, Target

# Reduced costs below this (dollars) count as improving; above it the column cannot lower the objective by
# more than this per job, which the bound accounts for anyway.
RC_TOL = 1e-7
FIRST_COLUMNS = 3  # per class, from earlier duals: its best options (fewer cost more rounds than they save)
ADD_PER_ROUND = 2  # per class and pricing round: its most improving options
MAX_ROUNDS = 30
# Without duals from an earlier solve, a queue of more than SAMPLE_ABOVE classes first solves a sample of about
# SAMPLE_SIZE of them against capacities scaled alike, whose duals are close to the whole queue's.
SAMPLE_ABOVE = 3_000
SAMPLE_SIZE = 1_000
SAMPLE_GAP = 1e-3  # the sample's duals need not be exact
SMALL_COLUMNS = 2_000  # up to this many options, one solve over them all beats any pricing round
SMALL_ADD = 200  # up to this many columns added at once, their terms are grouped by row in plain Python
DIRECT_COLUMNS = 40_000  # without duals, up to this many options GLOP solves them all at once faster


@dataclass
class Group:
    """The nodes of one target that are ready at the same time, or the pool's new nodes."""

    target: int
    ready: float
    new: bool
    nodes: list[Node]

    @property
    def cpu(self) -> float:
        return sum(n.free_cpu for n in self.nodes)

    @property
    def mem(self) -> float:
        return sum(n.free_memory_gib for n in self.nodes)

    @property
    def idle(self) -> int:
        return sum(1 for n in self.nodes if n.idle)


@dataclass
class Relaxation:
    """The LP optimum and, per class of identical jobs, how much of it runs on each ready-group."""

    value: float  # a valid lower bound; the LP optimum once column generation has converged
    primal: float  # the objective of the solution below (the LP optimum too, once converged)
    runs: list[tuple[list[int], dict[int, float]]]  # (job indices, group -> jobs' worth running there)
    new_nodes: dict[int, float]  # target -> new nodes the solution opens (fractional)
    group_target: list[int]  # the target of each ready-group in `runs`
    duals: np.ndarray  # per resource row, for the next solve of the same model
    columns: int  # options the LP was solved over, of `options` in all
    options: int
    rounds: int


def _node_fits(job: JobDemand, n: Node) -> bool:
    if job.nodes > 1 and not n.idle:
        return False
    return n.free_gpus >= job.gpus and n.free_cpu >= job.cpu - EPS and n.free_memory_gib >= job.memory_gib - EPS


def _full_fits(job: JobDemand, t: Target) -> bool:
    return job.gpus <= t.gpus_per_node and job.cpu <= t.cpu_per_node + EPS and job.memory_gib <= (
        t.memory_gib_per_node + EPS
    )


class LinearModel:
    """Everything about the relaxation that does not depend on how waiting is priced."""

    def __init__(self, problem: PlacementProblem) -> None:
        self.problem = problem
        policy = problem.policy
        targets = problem.targets
        jobs = problem.jobs
        room = math.inf if policy.max_cloud_gpus is None else policy.max_cloud_gpus - policy.cloud_gpus_in_use
        self.room = room

        groups: list[Group] = []
        target_groups: list[list[int]] = []
        for ti, t in enumerate(targets):
            by_ready: dict[float, list[Node]] = {}
            for n in t.nodes:
                by_ready.setdefault(n.ready_in_h, []).append(n)
            gs = []
            for ready, nodes in sorted(by_ready.items()):
                gs.append(len(groups))
                groups.append(Group(ti, ready, False, nodes))
            if t.kind == "cloud" and t.max_new_nodes > 0 and t.gpus_per_node <= room:
                gs.append(len(groups))
                groups.append(Group(ti, t.provisioning_h, True, []))
            target_groups.append(gs)
        self.groups = groups
        self.group_target = np.array([g.target for g in groups], dtype=np.int64)

        # Kinds: jobs alike in everything the relaxation sees except their wait. Options are per kind, and the
        # kinds of one shape (what decides where a job fits) are numbered together.
        kind_of: dict[tuple, int] = {}
        first_job: list[JobDemand] = []
        by_shape: dict[tuple, list[int]] = {}
        job_kind = []
        for job in jobs:
            shape = (job.gpus, job.nodes, job.cpu, job.memory_gib, job.gpu_types, job.checkpointable,
                     job.allowed_targets)
            key = (shape, job.runtime_h, job.value_of_time)
            k = kind_of.get(key)
            if k is None:
                k = kind_of[key] = len(first_job)
                first_job.append(job)
                by_shape.setdefault(shape, []).append(k)
            job_kind.append(k)
        self.n_kinds = len(first_job)
        renumber = np.empty(self.n_kinds, dtype=np.int64)
        renumber[[k for ks in by_shape.values() for k in ks]] = np.arange(self.n_kinds)
        self.job_kind = renumber[np.array(job_kind, dtype=np.int64)] if jobs else np.zeros(0, dtype=np.int64)

        fit_memo: dict[tuple, bool] = {}
        shape_groups: dict[tuple, list[int]] = {}
        for shape, ks in by_shape.items():
            job = first_job[ks[0]]
            gl = []
            for ti, t in enumerate(targets):
                if not feasible(job, t, policy):
                    continue
                for gi in target_groups[ti]:
                    g = groups[gi]
                    fk = (gi, job.gpus, job.cpu, job.memory_gib, job.nodes > 1)
                    ok = fit_memo.get(fk)
                    if ok is None:
                        ok = _full_fits(job, t) if g.new else any(_node_fits(job, n) for n in g.nodes)
                        fit_memo[fk] = ok
                    if ok:
                        gl.append(gi)
            shape_groups[shape] = gl

        # Resource rows: cover (group, GPU size), CPU, memory and whole idle nodes per group.
        row_id: dict[tuple, int] = {}

        def row(key: tuple) -> int:
            r = row_id.get(key)
            if r is None:
                r = row_id[key] = len(row_id)
            return r

        # Options, kind by kind (contiguous): group, cost without start charges, GPU-hours held, and the rows
        # and coefficients of one job's worth of it (cover, CPU, memory, whole nodes; -1: no such row).
        n_opts = [len(shape_groups[sh]) for sh, ks in by_shape.items() for _ in ks]
        self.kind_start = np.zeros(self.n_kinds + 1, dtype=np.int64)
        self.kind_start[1:] = np.cumsum(n_opts) if n_opts else []
        # Built as lists and turned into arrays once: a short queue has a handful of options per shape, where
        # numpy's per-call cost is most of the work. The arithmetic is costs.run_cost's and costs.delay_cost's,
        # in their order, so that prices agree exactly.
        og: list[int] = []
        oc: list[float] = []
        oh: list[float] = []
        orow: list[tuple[int, int, int, int]] = []
        ocoef: list[tuple[float, float, float, float]] = []
        for shape, ks in by_shape.items():
            gl = shape_groups[shape]
            if not gl:
                continue
            gpus, nodes, cpu, mem = shape[0], shape[1], shape[2], shape[3]
            tg = gpus * nodes
            ts = [targets[groups[gi].target] for gi in gl]
            price_share = [t.price_per_node_h * (tg / t.gpus_per_node if t.gpus_per_node > 0 else float(nodes))
                           for t in ts]
            speed = [t.speed for t in ts]
            ready = [groups[gi].ready for gi in gl]
            rows_here = [(row(("cover", gi, gpus)) if gpus > 0 else -1,
                          row(("cpu", gi)) if cpu > 0 else -1,
                          row(("mem", gi)) if mem > 0 else -1,
                          row(("gang", gi)) if nodes > 1 else -1) for gi in gl]
            coef = (float(nodes), float(nodes * cpu), float(nodes * mem), float(nodes))
            span = range(len(gl))
            for k in ks:
                runtime = float(first_job[k].runtime_h)
                per = float(first_job[k].value_of_time) * tg
                held = tg * runtime
                oc.extend([price_share[a] * runtime / speed[a] + per * ready[a] for a in span])
                oh.extend([held / speed[a] for a in span])
            og.extend(gl * len(ks))
            orow.extend(rows_here * len(ks))
            ocoef.extend([coef] * (len(ks) * len(gl)))
        self.rows = list(row_id)
        self.n_rows = len(self.rows)
        self.o_group = np.array(og, dtype=np.int64)
        self.o_target = self.group_target[self.o_group]
        self.o_cost = np.array(oc, dtype=np.float64)
        self.o_held = np.array(oh, dtype=np.float64)
        r = np.array(orow, dtype=np.int64).reshape(-1, 4)
        c = np.array(ocoef, dtype=np.float64).reshape(-1, 4)
        self.o_row = [r[:, j].copy() for j in range(4)]
        self.o_coef = [c[:, j].copy() for j in range(4)]

        # Patterns over the GPU sizes each group may host, per free-GPU profile.
        sizes: dict[int, set[int]] = {}
        for key in self.rows:
            if key[0] == "cover":
                sizes.setdefault(key[1], set()).add(key[2])
        self.patterns: list[tuple[int, int, int, list[tuple[tuple[int, int], ...]], list[int]]] = []
        for gi, szs in sizes.items():
            g = groups[gi]
            t = targets[g.target]
            order = sorted(szs)
            profiles = Counter(x.free_gpus for x in g.nodes) if not g.new else Counter({t.gpus_per_node: 0})
            for free, count in profiles.items():
                pats = maximal_patterns((free,), [(s,) for s in order], limit=10_000, steps=1_000_000)
                if pats:
                    self.patterns.append((gi, free, count, pats, order))

    def solve(
        self,
        waits: Sequence[float],
        start_rate: dict[int, float] | None = None,
        time_limit_s: float | None = None,
        duals: np.ndarray | None = None,
        everything: bool = False,
        gap_tol: float = 0.0,
        max_rounds: int = MAX_ROUNDS,
        first_columns: int = FIRST_COLUMNS,
        glop_dtime: float | None = None,
    ) -> Relaxation | None:
        """The relaxation with waiting priced at `waits` and on-prem starts charged `start_rate` dollars per
        GPU-hour held (per target); `duals` from an earlier solve pick each class's `first_columns` best
        options to start from, `everything` puts every option in at once. Column generation stops once the bound is within `gap_tol` (relative) of
        the solution, after `max_rounds` solves, or when time runs short; None when GLOP has no optimum of even
        the first columns. `glop_dtime` caps each GLOP solve by GLOP's deterministic time instead of the clock
        (pass no `time_limit_s` with it): the result then depends on the input only."""
        t_end = None if time_limit_s is None else time.perf_counter() + time_limit_s
        cols = _Columns(self, waits, start_rate)
        if cols.n_classes == 0:
            return Relaxation(0.0, 0.0, [], {}, self.group_target.tolist(), np.zeros(self.n_rows), 0, 0, 0)
        if duals is None and not everything and self._huge(cols):
            if gap_tol <= 0:
                # The exact optimum without duals to start from: GLOP on every option at once beats column
                # generation from a sample, whose rounds each cost a fresh solve.
                everything = True
            else:
                first = self._sample(cols, waits, start_rate, t_end, gap_tol, glop_dtime)
                if first is not None:
                    duals = first.duals
        return self._cg(cols, 1.0, duals, everything, t_end, gap_tol, max_rounds, first_columns, glop_dtime)

    def rough(
        self, waits: Sequence[float], start_rate: dict[int, float] | None = None, time_limit_s: float | None = None,
        glop_dtime: float | None = None,
    ) -> Relaxation | None:
        """A quick stand-in for the relaxation's solution: on a huge queue, every class on its option of least
        reduced cost (when negative) under the duals of a scaled sample, with no bound (value -inf); on
        others, the relaxation itself. None when GLOP does not finish in time."""
        t_end = None if time_limit_s is None else time.perf_counter() + time_limit_s
        cols = _Columns(self, waits, start_rate)
        if cols.n_classes == 0 or not self._huge(cols):
            return self.solve(waits, start_rate, time_limit_s, glop_dtime=glop_dtime)
        first = self._sample(cols, waits, start_rate, t_end, SAMPLE_GAP, glop_dtime)
        if first is None:
            return None
        y = first.duals
        part = cols.d.copy()
        ye = np.append(y, 0.0)
        for a in range(4):
            part -= ye[self.o_row[a][cols.col_opt]] * self.o_coef[a][cols.col_opt]
        best = _best_per_class(part, cols.col_cls, 1, part < 0)
        runs: list[tuple[list[int], dict[int, float]]] = []
        fresh: dict[int, float] = {}
        for j in best.tolist():
            c = int(cols.col_cls[j])
            gi = int(self.o_group[cols.col_opt[j]])
            runs.append((cols.members[c], {gi: float(cols.cn[c])}))
            g = self.groups[gi]
            if g.new:
                t = self.problem.targets[g.target]
                per_node = t.gpus_per_node if t.gpus_per_node > 0 else 1
                used = self.problem.jobs[cols.members[c][0]].total_gpus * cols.cn[c] / per_node
                fresh[g.target] = fresh.get(g.target, 0.0) + used
        return Relaxation(-math.inf, math.nan, runs, fresh, self.group_target.tolist(), y, 0, len(cols.d), 0)

    def huge(self, waits: Sequence[float]) -> bool:
        """Whether, priced at `waits`, the relaxation has too many options to solve over them all at once."""
        return self._huge(_Columns(self, waits, None))

    def _huge(self, cols: _Columns) -> bool:
        return cols.n_classes > SAMPLE_ABOVE and len(cols.d) > DIRECT_COLUMNS

    def _sample(
        self, cols: _Columns, waits: Sequence[float], start_rate: dict[int, float] | None, t_end: float | None,
        gap_tol: float, glop_dtime: float | None = None,
    ) -> Relaxation | None:
        """The relaxation of every k-th class against capacities divided by k."""
        k = cols.n_classes // SAMPLE_SIZE
        sample = _Columns(self, waits, start_rate, keep=np.arange(cols.n_classes) % k == 0, base=cols)
        return self._cg(sample, 1.0 / k, None, False, t_end, max(gap_tol, SAMPLE_GAP), MAX_ROUNDS, FIRST_COLUMNS,
                        glop_dtime)

    def _cg(self, cols: _Columns, scale: float, duals: np.ndarray | None, everything: bool,
            t_end: float | None, gap_tol: float, max_rounds: int, first_columns: int,
            glop_dtime: float | None = None) -> Relaxation | None:
        """Column generation over `cols`, every capacity multiplied by `scale`."""
        problem = self.problem
        targets = problem.targets
        policy = problem.policy
        col_cls, col_opt, d, cn = cols.col_cls, cols.col_opt, cols.d, cols.cn
        n_cols = len(d)
        inf = math.inf

        mb = mbh.ModelBuilderHelper()

        def variable(lb: float, ub: float, cost: float) -> int:
            v = mb.add_var()
            mb.set_var_lower_bound(v, lb)
            mb.set_var_upper_bound(v, ub)
            if cost:
                mb.set_var_objective_coefficient(v, cost)
            return v

        def constraint(lb: float, ub: float) -> int:
            r = mb.add_linear_constraint()
            mb.set_constraint_lower_bound(r, lb)
            mb.set_constraint_upper_bound(r, ub)
            return r

        # Resource rows first, so that constraint k is row k of the model.
        new_vars: dict[int, int] = {}

        def new_var(ti: int) -> int:
            v = new_vars.get(ti)
            if v is None:
                t = targets[ti]
                v = new_vars[ti] = variable(0.0, t.max_new_nodes * scale, new_node_cost(t, policy))
            return v

        for key in self.rows:
            g = self.groups[key[1]]
            t = targets[g.target]
            if key[0] == "cover":
                constraint(-inf, 0.0)
            else:
                kind = key[0]
                if kind == "cpu":
                    per_node, existing = t.cpu_per_node, g.cpu
                elif kind == "mem":
                    per_node, existing = t.memory_gib_per_node, g.mem
                else:
                    per_node, existing = 1.0, g.idle
                r = constraint(-inf, existing * scale if not g.new else 0.0)
                if g.new:
                    mb.add_term_to_constraint(r, new_var(g.target), -per_node)
        row_index = {key: k for k, key in enumerate(self.rows)}
        for gi, _free, count, pats, order in self.patterns:
            g = self.groups[gi]
            if not g.new:
                total = constraint(-inf, count * scale)
            else:
                total = constraint(0.0, 0.0)
                mb.add_term_to_constraint(total, new_var(g.target), -1.0)
            for pat in pats:
                z = variable(0.0, inf, 0.0)
                mb.add_term_to_constraint(total, z, 1.0)
                for k, c in pat:
                    mb.add_term_to_constraint(row_index[("cover", gi, order[k])], z, -float(c))
        if policy.max_cloud_gpus is not None and new_vars:
            cap = constraint(-inf, max(0.0, self.room) * scale)
            for ti, v in new_vars.items():
                mb.add_term_to_constraint(cap, v, float(targets[ti].gpus_per_node))

        # A class with one column in the LP needs no row of its own: the column's bound (its count) does, and
        # most classes never get a second column. Its row is added when it does.
        one: dict[int, int] = {}  # class -> its row
        col_var = np.full(n_cols, -1, dtype=np.int64)  # column -> its variable, for the columns in the LP
        handles: list[mbh.Variable] = []  # variable handles by variable index, as the bulk calls take them
        cls_cols: dict[int, list[int]] = {}  # class -> its columns in the LP
        in_lp = np.zeros(n_cols, dtype=bool)
        row_a = [self.o_row[j][col_opt] for j in range(4)]
        coef_a = [self.o_coef[j][col_opt] for j in range(4)]

        def add(cols_: np.ndarray) -> None:
            if len(cols_) == 0:
                return
            ub = cn[col_cls[cols_]]
            vs = mb.add_var_array_with_bounds(np.zeros(len(cols_)), ub, np.zeros(len(cols_), dtype=bool), "")
            mb.set_objective_coefficients(vs.tolist(), d[cols_].tolist())
            start = len(handles)
            handles.extend(mbh.Variable(mb, v) for v in vs.tolist())
            col_var[cols_] = vs
            in_lp[cols_] = True
            # Terms row by row: one call per resource row touched, rows in order, and in each row the terms by
            # resource (cover, CPU, memory, whole nodes), then by column.
            if len(cols_) <= SMALL_ADD:
                terms: dict[int, tuple[list[mbh.Variable], list[float]]] = {}
                for a in range(4):
                    for k, (rr, cc) in enumerate(zip(row_a[a][cols_].tolist(), coef_a[a][cols_].tolist())):
                        if rr >= 0:
                            hv, hc = terms.setdefault(rr, ([], []))
                            hv.append(handles[start + k])
                            hc.append(cc)
                for rr in sorted(terms):
                    mb.add_terms_to_constraint(rr, *terms[rr])
            else:
                rows_ = np.concatenate([row_a[a][cols_] for a in range(4)])
                coefs = np.concatenate([coef_a[a][cols_] for a in range(4)])
                local = np.tile(np.arange(len(cols_)), 4)
                keep = rows_ >= 0
                rows_, coefs, local = rows_[keep], coefs[keep], local[keep]
                order = np.argsort(rows_, kind="stable")
                rows_, coefs, local = rows_[order], coefs[order], local[order]
                cuts = np.flatnonzero(np.diff(rows_)) + 1
                for rr, cc, ll in zip(np.split(rows_, cuts), np.split(coefs, cuts), np.split(local, cuts)):
                    if len(rr):
                        mb.add_terms_to_constraint(int(rr[0]), [handles[start + k] for k in ll.tolist()],
                                                   cc.tolist())
            for j, c in zip(cols_.tolist(), col_cls[cols_].tolist()):
                mine = cls_cols.setdefault(c, [])
                mine.append(j)
                if len(mine) > 1:
                    r1 = one.get(c)
                    if r1 is None:
                        r1 = one[c] = constraint(-inf, float(cn[c]))
                        mb.add_term_to_constraint(r1, int(col_var[mine[0]]), 1.0)
                    mb.add_term_to_constraint(r1, int(col_var[j]), 1.0)

        def resource_part(y: np.ndarray) -> np.ndarray:
            ye = np.append(y, 0.0)  # row index -1 (no row) reads this zero
            rc = d.copy()
            for a in range(4):
                rc -= ye[row_a[a]] * coef_a[a]
            return rc

        if everything or n_cols <= SMALL_COLUMNS or (duals is None and n_cols <= DIRECT_COLUMNS):
            first = np.arange(n_cols)
        elif duals is not None and len(duals) == self.n_rows:
            part = resource_part(duals)
            first = _best_per_class(part, col_cls, first_columns, part < 0)
        else:
            first = _best_per_class(d, col_cls, 1, np.ones(n_cols, dtype=bool))
        add(first)
        every_in = len(first) == n_cols

        solver = mbh.ModelSolverHelper("glop")
        rounds = 0
        last_solve = 0.0
        while True:
            rounds += 1
            if t_end is not None:
                left = t_end - time.perf_counter()
                if left <= 0:
                    return None
                solver.set_time_limit_in_seconds(left)
            # Dual simplex is about 3x faster than primal here (many columns, few coupling rows).
            solver.set_solver_specific_parameters(
                "use_dual_simplex: true" if glop_dtime is None
                else f"use_dual_simplex: true, max_deterministic_time: {glop_dtime!r}")
            t0 = time.perf_counter()
            solver.solve(mb)
            if solver.status() != mbh.SolveStatus.OPTIMAL:
                return None
            last_solve = time.perf_counter() - t0
            all_duals = solver.dual_values()
            y = all_duals[: self.n_rows]
            if every_in:
                # no option left to price in: the restricted optimum is the relaxation's
                bound = value = solver.objective_value() + cols.const
                break
            part = resource_part(y)
            # A class's row dual: its row's, or for a class with one column, that column's reduced cost when
            # negative (the column is then at its bound, whose dual plays the row's part).
            u = np.zeros(cols.n_classes)
            lone = in_lp.copy()
            if one:
                rows1 = np.fromiter(one.values(), dtype=np.int64, count=len(one))
                cls1 = np.fromiter(one.keys(), dtype=np.int64, count=len(one))
                u[cls1] = all_duals[rows1]
                lone[col_cls == -1] = False
                multi = np.zeros(cols.n_classes, dtype=bool)
                multi[cls1] = True
                lone &= ~multi[col_cls]
            np.minimum.at(u, col_cls[lone], np.minimum(part[lone], 0.0))
            rc = part - u[col_cls]
            value = solver.objective_value() + cols.const
            todo = (~in_lp) & (rc < -RC_TOL)
            if not todo.any():
                bound = value
                break
            # Lowering each class's row dual by its most negative reduced cost outside the LP makes the duals
            # feasible for the whole relaxation: the bound is off the restricted optimum by that much.
            worst = np.zeros(cols.n_classes)
            np.minimum.at(worst, col_cls[todo], rc[todo])
            bound = value + float((worst * cn).sum())
            if rounds >= max_rounds or value - bound <= gap_tol * max(1.0, abs(value)):
                break
            if t_end is not None and t_end - time.perf_counter() < 1.5 * last_solve:
                break  # the restricted optimum in hand is feasible, and its bound valid
            add(_best_per_class(rc, col_cls, ADD_PER_ROUND, todo))

        xs = solver.variable_values()
        runs_by: dict[int, dict[int, float]] = {}
        cols_in = np.flatnonzero(in_lp)
        vals = xs[col_var[cols_in]]
        pos = vals > 1e-6
        for j, v in zip(cols_in[pos].tolist(), vals[pos].tolist()):
            by = runs_by.setdefault(int(col_cls[j]), {})
            gi = int(self.o_group[col_opt[j]])
            by[gi] = by.get(gi, 0.0) + v
        runs = [(cols.members[c], by) for c, by in runs_by.items()]
        fresh = {ti: float(xs[v]) for ti, v in new_vars.items()}
        return Relaxation(bound, value, runs, {ti: v for ti, v in fresh.items() if v > 1e-9},
                          self.group_target.tolist(), y, int(in_lp.sum()), n_cols, rounds)


class _Columns:
    """Every option of every class of jobs (jobs of one kind with the same wait), priced for one solve."""

    def __init__(self, m: LinearModel, waits: Sequence[float], start_rate: dict[int, float] | None,
                 keep: np.ndarray | None = None, base: _Columns | None = None) -> None:
        if base is None:
            cls_of: dict[tuple[int, float], int] = {}
            cls_kind: list[int] = []
            cls_w: list[float] = []
            members: list[list[int]] = []
            for i, (k, wi) in enumerate(zip(m.job_kind.tolist(), list(waits))):
                c = cls_of.get((k, wi))
                if c is None:
                    c = cls_of[(k, wi)] = len(cls_kind)
                    cls_kind.append(k)
                    cls_w.append(wi)
                    members.append([])
                members[c].append(i)
            self.members = members
            self.const = float(sum(cls_w[c] * len(mm) for c, mm in enumerate(members)))
            ck = np.array(cls_kind, dtype=np.int64)
            self.cw = np.array(cls_w, dtype=np.float64)
            self.cn = np.array([len(mm) for mm in members], dtype=np.float64)
        else:
            assert keep is not None
            idx = np.flatnonzero(keep)
            self.members = [base.members[c] for c in idx.tolist()]
            self.const = float((base.cw[idx] * base.cn[idx]).sum())
            ck = base.ck[idx]
            self.cw = base.cw[idx]
            self.cn = base.cn[idx]
        self.ck = ck
        self.n_classes = len(ck)
        lens = m.kind_start[ck + 1] - m.kind_start[ck]
        col_cls = np.repeat(np.arange(len(ck)), lens)
        offs = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        col_opt = m.kind_start[ck][col_cls] + offs
        cost = m.o_cost[col_opt]
        if start_rate:
            rate = np.zeros(len(m.problem.targets))
            for ti, v in start_rate.items():
                rate[ti] = v
            cost = cost + rate[m.o_target[col_opt]] * m.o_held[col_opt]
        d = cost - self.cw[col_cls]
        # An option at least as dear as waiting is never needed: waiting takes no capacity.
        ok = d < 0
        self.col_cls, self.col_opt, self.d = col_cls[ok], col_opt[ok], d[ok]


def _best_per_class(score: np.ndarray, cls: np.ndarray, k: int, allowed: np.ndarray) -> np.ndarray:
    """Indices of the (at most) k lowest-scoring allowed columns of every class."""
    idx = np.flatnonzero(allowed)
    if len(idx) == 0:
        return idx
    order = idx[np.lexsort((score[idx], cls[idx]))]
    c = cls[order]
    start = np.searchsorted(c, c, side="left")
    rank = np.arange(len(order)) - start
    return order[rank < k]
