"""One CP-SAT round: build the model for given wait costs, solve it, and bind the solution to named nodes."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ortools.sat.python import cp_model
from ortools.sat.python import cp_model_helper as cmh

from spillover.placement.costs import cents, new_node_cost
from spillover.placement.ledger import Ledger
from spillover.placement.patterns import dominating
from spillover.placement.structure import Key, Structure

# On very large queues each class keeps only its cheapest options: a restriction of the model (plans stay
# valid; the LP bound is computed on the unrestricted relaxation).
MAX_OPTION_VARS = 60_000
MIN_OPTIONS = 4
SMALL_MODEL_VARS = 2_000  # (class, group) variables; up to this many, CP-SAT runs one worker
DET_SEED = 1  # CP-SAT's random seed in the deterministic mode (Policy.work_limit)


class _Model(cp_model.CpModel):
    """A CP-SAT model without the deprecated camel-case aliases, which take a millisecond to attach to each
    new model: more than solving a small one."""

    def _add_pre_pep8_methods(self) -> None:
        pass


@dataclass
class RoundResult:
    """A round's solution in counts, and how good CP-SAT says it is for its own model."""

    x: dict[tuple[int, int], int]  # (class, group) -> jobs
    z: dict[tuple[int, int], int]  # (profile, pattern) -> nodes
    status: str
    objective: float  # dollars
    bound: float  # dollars
    seconds: float  # inside CP-SAT
    work: float = 0.0  # CP-SAT's deterministic time spent


def solve_round(
    m: Structure, wait: Sequence[int], start_rate: dict[int, float], hint: Ledger | None, time_limit: float,
    work: float | None = None,
) -> RoundResult | None:
    """Solve the model with waiting priced at `wait` (cents per job) and on-prem starts charged
    `start_rate` dollars per GPU-hour held; None when CP-SAT finds no solution in `time_limit` seconds.

    With `work` (CP-SAT deterministic-time units), the solve is bounded by that instead of `time_limit`,
    and deterministic: one worker, a fixed seed, no wall-clock limit."""
    problem = m.problem
    policy = problem.policy
    targets = problem.targets
    model = _Model()
    lin = cp_model.LinearExpr
    ov: list[cp_model.IntVar] = []  # objective variables and coefficients
    oc: list[int] = []
    const = 0
    x: dict[tuple[int, int], cp_model.IntVar] = {}  # (class, group) -> jobs of the class run there
    saved_by_class: dict[int, cp_model.IntVar] = {}
    per_class = max(MIN_OPTIONS, MAX_OPTION_VARS // max(1, len(m.classes)))
    use: dict[tuple[int, int], tuple[list[cp_model.IntVar], list[int]]] = {}  # (group, key) -> replicas
    for ci, c in enumerate(m.classes):
        ws = sorted((wait[i] for i in c.members), reverse=True)
        n = len(ws)
        const += sum(ws)
        lead = problem.jobs[c.members[0]]
        opts = []
        for g, cost in c.options:
            ti = m.groups[g].target
            if ti in start_rate:
                cost += cents(start_rate[ti] * lead.total_gpus * lead.runtime_h / targets[ti].speed)
            # An option that costs at least the dearest wait in the class is never better than waiting.
            if cost < ws[0]:
                opts.append((g, cost))
        if len(opts) > per_class:
            opts.sort(key=lambda o: o[1])
            opts = opts[:per_class]
        if not opts:
            continue
        vs = []
        for g, cost in opts:
            v = model.new_bool_var("") if n == 1 else model.new_int_var(0, n, "")
            x[(ci, g)] = v
            vs.append(v)
            ov.append(v)
            oc.append(cost - ws[0] if n == 1 else cost)
            uv, uc = use.setdefault((g, c.key_by_group[g]), ([], []))
            uv.append(v)
            uc.append(c.nodes)
        u = lin.sum(vs)
        if n == 1:
            if len(vs) > 1:
                model.add(u <= 1)
            continue
        model.add(u <= n)
        # Saved wait = sum of the u dearest waits: concave in u, so its tangents bound it from above.
        saved = model.new_int_var(0, sum(ws), "")
        prefix = 0
        last = None
        for k in range(n):
            if ws[k] != last:
                model.add(saved <= prefix + ws[k] * (u - k))
                last = ws[k]
            prefix += ws[k]
        ov.append(saved)
        oc.append(-1)
        saved_by_class[ci] = saved

    z: dict[tuple[int, int], cp_model.IntVar] = {}
    supply: dict[tuple[int, int], tuple[list[cp_model.IntVar], list[int]]] = {}
    new_count: dict[int, list[cp_model.IntVar]] = {}
    in_use: dict[int, set[int]] = {}  # group -> the size keys some option there uses
    for g, key in use:
        in_use.setdefault(g, set()).add(key)
    for pi, p in enumerate(m.profiles):
        ub = targets[p.target].max_new_nodes if p.new else p.count
        if ub <= 0:
            continue
        vs = []
        keys_here = in_use.get(p.group)
        if keys_here is None:
            continue
        for kk, pat in enumerate(p.patterns):
            if keys_here.isdisjoint(p.pattern_keys[kk]):
                continue
            v = model.new_int_var(0, ub, "")
            z[(pi, kk)] = v
            vs.append(v)
            for key, cnt in pat:
                sv, sc = supply.setdefault((p.group, key), ([], []))
                sv.append(v)
                sc.append(cnt)
        if not vs:
            continue
        if p.new:
            new_count.setdefault(p.target, []).extend(vs)
        elif len(vs) > 1 or p.count < ub:
            model.add(lin.sum(vs) <= p.count)

    for (g, key), (uv, uc) in use.items():
        demand = lin.weighted_sum(uv, uc)
        gang, *size = m.keys[key]
        if not gang and not any(size):
            grp = m.groups[g]
            if grp.new:
                cnt = new_count.get(grp.target)
                if cnt is None:
                    model.add(demand == 0)
                else:
                    model.add(demand <= len(problem.jobs) * lin.sum(cnt))
            continue
        sv, sc = supply.get((g, key), ([], []))
        model.add(demand <= lin.weighted_sum(sv, sc))

    room_v: list[cp_model.IntVar] = []
    room_c: list[int] = []
    for ti, vs in new_count.items():
        t = targets[ti]
        model.add(lin.sum(vs) <= t.max_new_nodes)
        over = cents(new_node_cost(t, policy))
        for v in vs:
            ov.append(v)
            oc.append(over)
            room_v.append(v)
            room_c.append(t.gpus_per_node)
    if policy.max_cloud_gpus is not None and room_v:
        model.add(lin.weighted_sum(room_v, room_c) <= max(0, int(m.cap_room)))
    _minimize(model, lin.weighted_sum(ov, oc) + const)

    if hint is not None:
        _add_hint(m, model, hint, x, saved_by_class, z, wait)

    solver = cp_model.CpSolver()
    # Measured on the benchmark instances: presolve spends most of a 2 s budget on a model this shape
    # (and sometimes all of it), while the LP-based workers reach a 1% gap in well under a second.
    solver.parameters.cp_model_presolve = False
    if work is not None:
        # A single worker searches sequentially, so the search and its deterministic-time count depend on the
        # model, the parameters and the seed only; a wall-clock limit, even a generous one, could cut it short.
        # (Two workers are deterministic only with interleave_search, which on these models reached a worse
        # solution in three times the wall-clock time of one worker.)
        solver.parameters.max_deterministic_time = max(0.01, work)
        solver.parameters.random_seed = DET_SEED
        solver.parameters.num_workers = 1
    else:
        solver.parameters.max_time_in_seconds = max(0.01, time_limit)
        if len(x) <= SMALL_MODEL_VARS:
            # One worker solves a small model in about a millisecond; starting a second costs more than that.
            solver.parameters.num_workers = 1
        else:
            solver.parameters.num_workers = 2
            solver.parameters.subsolvers.extend(["default_lp", "max_lp"])
    solver.parameters.relative_gap_limit = policy.relative_gap
    st = solver.solve(model)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    sol = solver.response_proto.solution  # a variable's value is its entry there, as `solver.value` reads it
    xv = {k: int(sol[v.index]) for k, v in x.items()}
    zv = {k: int(sol[v.index]) for k, v in z.items()}
    return RoundResult(
        {k: v for k, v in xv.items() if v > 0},
        {k: v for k, v in zv.items() if v > 0},
        "optimal" if st == cp_model.OPTIMAL else "feasible",
        solver.objective_value / 100.0,
        solver.best_objective_bound / 100.0,
        solver.wall_time,
        solver.deterministic_time,
    )


def _minimize(model: cp_model.CpModel, obj: cp_model.LinearExpr) -> None:
    """`model.minimize(obj)` for an integer expression, writing the flattened terms in bulk rather than one by
    one: the same objective in the model."""
    model.clear_objective()
    flat = cmh.FlatIntExpr(obj)
    proto = model.proto.objective
    proto.vars.extend([v.index for v in flat.vars])
    proto.scaling_factor = 1.0
    proto.offset = flat.offset
    proto.coeffs.extend(flat.coeffs)


def _add_hint(
    m: Structure,
    model: cp_model.CpModel,
    ledger: Ledger,
    x: dict[tuple[int, int], cp_model.IntVar],
    saved_by_class: dict[int, cp_model.IntVar],
    z: dict[tuple[int, int], cp_model.IntVar],
    wait: Sequence[int],
) -> None:
    """Hint the model with a plan's bindings (a gang spread over ready-groups counts in its latest one)."""
    problem = m.problem
    hx: dict[tuple[int, int], int] = {}
    per_node: dict[tuple[int, str], dict[int, int]] = {}
    node_prof: dict[tuple[int, str], int] = {}
    for i, (ti, names) in ledger.binding.items():
        job = problem.jobs[i]
        ci = m.job_class[i]
        k = m.key(ti, job)
        groups = []
        for name in names:
            pi = m.node_profile.get((ti, name))
            if pi is None:
                pi = m.new_profile.get(ti)
            if pi is None:
                continue
            node_prof[(ti, name)] = pi
            groups.append(m.profiles[pi].group)
            d = per_node.setdefault((ti, name), {})
            d[k] = d.get(k, 0) + 1
        if groups:
            g = max(groups, key=lambda gi: m.groups[gi].ready)
            hx[(ci, g)] = hx.get((ci, g), 0) + 1
    # Hints in the order `model.add_hint` would add them, written in bulk (every variable here is positive).
    hv = [v.index for v in x.values()]
    hval = [hx.get(key, 0) for key in x]
    for ci, sv in saved_by_class.items():
        c = m.classes[ci]
        u = sum(hx.get((ci, g), 0) for g, _ in c.options if (ci, g) in x)
        ws = sorted((wait[i] for i in c.members), reverse=True)
        hv.append(sv.index)
        hval.append(int(sum(ws[:u])))
    hz: dict[tuple[int, int], int] = {}
    for node, need in per_node.items():
        pi = node_prof[node]
        kk = dominating(m.profiles[pi].patterns, need)
        if kk is not None:
            hz[(pi, kk)] = hz.get((pi, kk), 0) + 1
    hv.extend(v.index for v in z.values())
    hval.extend(hz.get(key, 0) for key in z)
    if hv:
        hint = model.proto.solution_hint
        hint.vars.extend(hv)
        hint.values.extend(hval)


def bind(m: Structure, r: RoundResult, wait: Sequence[int]) -> Ledger:
    """Turn class counts and pattern counts into replicas on named nodes, checked exactly by the ledger."""
    problem = m.problem
    targets = problem.targets
    ledger = Ledger(problem)
    fair = any(j.share is not None for j in problem.jobs)
    slots: dict[tuple[int, int], deque[list]] = {}  # (group, key) -> [node name, free slots] entries
    any_node: dict[int, list[str]] = {}
    new_seq: dict[int, int] = {}
    taken: dict[int, int] = {}
    for (pi, kk), cnt in sorted(r.z.items()):
        p = m.profiles[pi]
        for _ in range(cnt):
            if p.new:
                k = new_seq.get(p.target, 0)
                new_seq[p.target] = k + 1
                name = f"{targets[p.target].id}/new-{k}"
            else:
                used = taken.get(pi, 0)
                taken[pi] = used + 1
                name = p.nodes[used]
            any_node.setdefault(p.group, []).append(name)
            for key, n in p.patterns[kk]:
                slots.setdefault((p.group, key), deque()).append([name, n])
    for g in range(len(m.groups)):
        if not m.groups[g].new and g not in any_node:
            any_node[g] = [m.profiles[pi].nodes[0] for pi in m.groups[g].profiles if m.profiles[pi].nodes][:1]
    by_class: dict[int, list[tuple[int, int]]] = {}
    for (ci, g), n in r.x.items():
        by_class.setdefault(ci, []).append((g, n))
    for ci, runs in sorted(by_class.items()):
        c = m.classes[ci]
        # Inside a class, the jobs whose wait is dearest are the ones that run; between teams sharing by weight,
        # the ones first in fair-share order (the class keeps queue order).
        members = list(c.members) if fair else sorted(c.members, key=lambda i: -wait[i])
        pos = 0
        for g, n in sorted(runs):
            key = c.key_by_group[g]
            ti = m.groups[g].target
            for _ in range(n):
                if pos >= len(members):
                    break
                i = members[pos]
                pos += 1
                names = _take(slots.get((g, key), deque()), c.nodes, m.keys[key], any_node.get(g, []))
                if names is not None and ledger.can_place(i, ti, names):
                    ledger.place(i, ti, names)
    return ledger


def _take(avail: deque[list], k: int, key: Key, fallback: list[str]) -> list[str] | None:
    """Slots on k distinct nodes for one job (a zero-size replica goes to any node of the group)."""
    gang, *size = key
    if not gang and not any(size):
        return fallback[:1] or None
    names: list[str] = []
    while avail and len(names) < k:
        slot = avail[0]
        if slot[0] in names:
            return None
        names.append(slot[0])
        slot[1] -= 1
        if slot[1] <= 0:
            avail.popleft()
    return names if len(names) == k else None
