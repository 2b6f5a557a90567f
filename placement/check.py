"""`check_plan`: every way a plan can break the placement rules, as sentences (empty when the plan is valid)."""

from __future__ import annotations

from collections import Counter

from spillover.placement.assemble import job_wait_costs, plan_forecasts
from spillover.placement.costs import delay_cost, new_node_cost, run_cost
from spillover.placement.feasibility import infeasibility
from spillover.placement.ledger import EPS, Ledger
from spillover.placement.types import Action, PlacementProblem, Plan


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def check_plan(problem: PlacementProblem, plan: Plan) -> list[str]:
    """Violations of the placement rules by `plan`; checks the WAIT rule and prices only on a sound plan."""
    out: list[str] = []
    jobs = problem.jobs
    policy = problem.policy
    targets = {t.id: t for t in problem.targets}

    ids = [d.job_id for d in plan.decisions]
    for jid, n in Counter(ids).items():
        if n > 1:
            out.append(f"job {jid} is decided {n} times")
    want = [j.id for j in jobs]
    for jid in set(want) - set(ids):
        out.append(f"job {jid} has no decision")
    for jid in set(ids) - set(want):
        out.append(f"decision for unknown job {jid}")
    if not out and ids != want:
        out.append("decisions are not in the order of the problem's jobs")
    if out:
        return out

    # Replica usage per (target, node): (gpus, cpu, memory, replicas, gang replicas)
    use: dict[tuple[str, str], list[float]] = {}
    new_used: dict[str, set[str]] = {}
    existing = {t.id: {n.name: n for n in t.nodes} for t in problem.targets}
    for job, d in zip(jobs, plan.decisions):
        if d.action is Action.WAIT:
            if d.target is not None or d.nodes:
                out.append(f"job {job.id} waits but is bound to {d.target} {list(d.nodes)}")
            continue
        t = targets.get(d.target or "")
        if t is None:
            out.append(f"job {job.id} is placed on unknown target {d.target}")
            continue
        if (d.action is Action.START) != (t.kind == "onprem"):
            out.append(f"job {job.id}: {d.action.value} on {t.kind} target {t.id}")
        why = infeasibility(job, t, policy)
        if why is not None:
            out.append(f"job {job.id} cannot run on {t.id}: {why}")
        if len(d.nodes) != job.nodes:
            out.append(f"job {job.id} needs {job.nodes} nodes, is bound to {len(d.nodes)}")
        if len(set(d.nodes)) != len(d.nodes):
            out.append(f"job {job.id} has two replicas on one node")
        for name in d.nodes:
            if name in existing[t.id]:
                node = existing[t.id][name]
                if job.nodes > 1 and not node.idle:
                    out.append(f"gang job {job.id} uses node {name}, which is not idle")
            elif name.startswith(f"{t.id}/new-") and name[len(t.id) + 5:].isdigit():
                if t.kind != "cloud":
                    out.append(f"job {job.id} uses new node {name} on on-prem target {t.id}")
                new_used.setdefault(t.id, set()).add(name)
            else:
                out.append(f"job {job.id} uses node {name}, which {t.id} does not have")
                continue
            u = use.setdefault((t.id, name), [0.0, 0.0, 0.0, 0, 0])
            u[0] += job.gpus
            u[1] += job.cpu
            u[2] += job.memory_gib
            u[3] += 1
            u[4] += 1 if job.nodes > 1 else 0

    for (tid, name), (g, c, m, n, gang) in use.items():
        t = targets[tid]
        node = existing[t.id].get(name)
        free = (
            (node.free_gpus, node.free_cpu, node.free_memory_gib)
            if node is not None
            else (t.gpus_per_node, t.cpu_per_node, t.memory_gib_per_node)
        )
        for dim, want_, have in (("GPUs", g, free[0]), ("CPUs", c, free[1]), ("GiB", m, free[2])):
            if want_ > have + EPS:
                out.append(f"node {name} is oversubscribed: {want_:g} {dim} bound, {have:g} free")
        if gang and n > 1:
            out.append(f"node {name} runs a gang replica and {int(n) - 1} other replica(s)")

    cloud_new_gpus = 0
    for tid, t in targets.items():
        used = len(new_used.get(tid, ()))
        said = plan.new_nodes.get(tid, 0)
        if said != used:
            out.append(f"plan says {said} new nodes on {tid}, decisions use {used}")
        limit = t.max_new_nodes if t.kind == "cloud" else 0
        if used > limit:
            out.append(f"{tid} gets {used} new nodes, more than its limit of {limit}")
        if t.kind == "cloud":
            cloud_new_gpus += used * t.gpus_per_node
    for tid in set(plan.new_nodes) - set(targets):
        out.append(f"plan adds nodes to unknown target {tid}")
    if policy.max_cloud_gpus is not None and cloud_new_gpus > 0:
        total = policy.cloud_gpus_in_use + cloud_new_gpus
        if total > policy.max_cloud_gpus:
            out.append(f"cloud GPUs {total} exceed the cap of {policy.max_cloud_gpus}")
    out += _limit_violations(problem, plan)
    if out:
        return out

    # The plan is sound: replay it through the ledger to price it and to test the WAIT rule.
    ledger = Ledger(problem)
    for i, d in enumerate(plan.decisions):
        if d.action is not Action.WAIT:
            ti = ledger.target_index[d.target or ""]
            ledger.place(i, ti, d.nodes)
    fc = plan_forecasts(problem, ledger)
    waits = job_wait_costs(problem, fc)
    total = 0.0
    for i, (job, d) in enumerate(zip(jobs, plan.decisions)):
        if d.action is Action.WAIT:
            f = fc[i]
            if not _close(d.start_h, f.start_h) or d.wait_target != f.target:
                out.append(
                    f"job {job.id} waits for {d.wait_target} at {d.start_h:.3f} h, "
                    f"the plan's forecast says {f.target} at {f.start_h:.3f} h"
                )
            cost = waits[i]
            opt = ledger.best_option(i)
            # The rule itself, written out here rather than shared, so that the check is independent.
            if opt is not None and opt.cost <= waits[i] + 1e-6:
                out.append(
                    f"job {job.id} waits (cost {waits[i]:.2f}) although running now on "
                    f"{problem.targets[opt.target].id} costs {opt.cost:.2f}"
                )
        else:
            t = targets[d.target or ""]
            start = ledger.start_h(*ledger.binding[i])
            if not _close(d.start_h, start):
                out.append(
                    f"job {job.id} says it starts at {d.start_h:.3f} h, its nodes are ready at {start:.3f} h"
                )
            cost = run_cost(job, t) + delay_cost(job, start)
        if not _close(d.cost, cost):
            out.append(f"job {job.id} is priced {d.cost:.2f}, the plan implies {cost:.2f}")
        total += cost
    total += sum(n * new_node_cost(targets[tid], policy) for tid, n in plan.new_nodes.items())
    if not _close(plan.objective, total):
        out.append(f"objective {plan.objective:.2f} differs from the plan's consistent cost {total:.2f}")
    return out


def _limit_violations(problem: PlacementProblem, plan: Plan) -> list[str]:
    """Quotas a plan takes more of than its team may hold or borrow, and budgets its bursts overspend. Only what
    the plan adds counts: capacity held before it (and handed back by preemption) is not the plan's doing."""
    policy = problem.policy
    if not policy.team_limits:
        return []
    targets = {t.id: t for t in problem.targets}
    quota = {(q.team, q.gpu_type): q for q in policy.quotas}
    limited = {q.team for q in policy.quotas}
    used = {k: q.used for k, q in quota.items()}
    added: set[tuple[str, str]] = set()
    spent = {b.id: 0.0 for b in policy.budgets}
    caps = {c.team: c for c in policy.cloud_caps}
    cloud_added = {c.team: 0 for c in policy.cloud_caps}
    out = []
    for job, d in zip(problem.jobs, plan.decisions):
        t = targets.get(d.target or "")
        if d.action is Action.WAIT or t is None:
            continue
        if t.kind == "onprem" and job.team in limited:
            key = (job.team, t.gpu_type)
            if key not in quota:
                out.append(f"job {job.id} runs on {t.gpu_type} GPUs, of which team {job.team} has no quota")
                continue
            used[key] += job.total_gpus
            added.add(key)
        elif t.kind == "cloud":
            if job.team in caps:
                cloud_added[job.team] += job.total_gpus
            for b in policy.budgets:
                if b.id in job.budgets and (b.cloud is None or b.cloud == t.cloud):
                    spent[b.id] += run_cost(job, t)
    for team, gpu_type in sorted(added):
        q = quota[(team, gpu_type)]
        u = used[(team, gpu_type)]
        if u <= q.nominal:
            continue
        if q.cohort is None:
            out.append(f"team {team} holds {u} {gpu_type} GPUs, over its quota of {q.nominal} with no cohort")
        elif q.borrowing_limit is not None and u > q.nominal + q.borrowing_limit:
            out.append(f"team {team} holds {u} {gpu_type} GPUs, over its quota {q.nominal} + borrowing limit "
                       f"{q.borrowing_limit}")
        else:
            members = [m for m in quota.values() if m.cohort == q.cohort and m.gpu_type == gpu_type]
            borrowed = sum(max(0, used[(m.team, gpu_type)] - m.nominal) for m in members)
            # a team taking up its own quota in the same plan is admitted whatever its cohort borrows (borrowers
            # are preempted later): idle quota is counted as it was before the plan
            lendable = sum(min(m.lending_limit if m.lending_limit is not None else 10**9,
                               max(0, m.nominal - min(m.used, used[(m.team, gpu_type)]))) for m in members)
            if borrowed > lendable:
                out.append(f"cohort {q.cohort} borrows {borrowed} {gpu_type} GPUs, {lendable} are idle to lend")
    for team, added_gpus in sorted(cloud_added.items()):
        c = caps[team]
        if added_gpus and c.used + added_gpus > c.gpus:
            out.append(f"team {team} holds {c.used + added_gpus} cloud GPUs, over its cap of {c.gpus}")
    for b in policy.budgets:
        if spent[b.id] > b.room + 1e-6:
            out.append(f"bursts cost ${spent[b.id]:,.2f} against budget {b.id}, which has ${b.room:,.2f} left")
    return out
