"""The cluster behind the fake API: a scheduler, kubelets that run pods for a set time, the Job controller and GC."""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from .matching import milli, node_matches_affinity, untolerated_taint
from .objects import (
    INDEX_KEY,
    admit_pod,
    compress_indexes,
    controller_owner,
    exit_code,
    node_conditions,
    node_ready,
    pod_requests,
    pod_terminal,
    random_suffix,
    running_status,
    runtime_seconds,
    set_condition,
    terminated_status,
)
from .store import Key, Store, clone, now_rfc3339


@dataclass
class _JobTrack:
    """What the Job controller remembers outside the API, like the real one's finalizer-based accounting."""

    started: float
    start_ts: str
    tracked: dict[str, int | None] = field(default_factory=dict)  # pod uid -> index, pods not yet counted
    succeeded: int = 0
    failed: int = 0
    done: set[int] = field(default_factory=set)
    finished: float | None = None


def _key(obj: dict) -> Key:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


class Controller:
    def __init__(self, store: Store, time_scale: float):
        self.store = store
        self.time_scale = time_scale
        self.kick = threading.Condition(store.lock)
        self.idle = threading.Condition(store.lock)
        self.dirty = True
        self.busy = False
        self.closed = False
        self.thread: threading.Thread | None = None
        self.errors: list[str] = []
        self.pod_due: dict[str, float] = {}  # pod uid -> monotonic time its containers exit
        self.jobs: dict[str, _JobTrack] = {}
        self.next_due: float | None = None
        self._ip_counter = 0
        self._alloc_cache: dict[str, tuple[str, dict[str, int]]] = {}
        self._request_cache: dict[str, dict[str, int]] = {}
        self._shape_cache: dict[str, str] = {}
        # Indexes kept up to date from every write, so a pass costs what changed rather than the cluster's size.
        self._usage: dict[str, Counter] = {}  # node -> requests of its unfinished pods ("pods" counts them)
        self._contrib: dict[Key, tuple[str, dict[str, int]]] = {}
        self._unbound: dict[Key, None] = {}  # insertion-ordered: pods are scheduled first come, first served
        self._bound_pending: set[Key] = set()
        self._dirty_jobs: set[str] = set()
        self._gc_needed = False
        store.on_write = self._on_write

    # ------------------------------------------------------------------------------------------------ lifecycle

    def _on_write(self, resource: str, type_: str, obj: dict) -> None:
        self.dirty = True
        if resource == "pods":
            self._index_pod(type_, obj)
        elif resource == "jobs":
            self._dirty_jobs.add(obj["metadata"]["uid"])
            if type_ == "DELETED":
                self._gc_needed = True
        self.kick.notify_all()

    def _index_pod(self, type_: str, pod: dict) -> None:
        key = _key(pod)
        old = self._contrib.pop(key, None)
        if old is not None:
            self._usage[old[0]].subtract(old[1])
        self._unbound.pop(key, None)
        self._bound_pending.discard(key)
        owner = controller_owner(pod)
        if owner is not None and owner.get("kind") == "Job":
            self._dirty_jobs.add(owner.get("uid"))
        if type_ == "DELETED":
            self._request_cache.pop(pod["metadata"]["uid"], None)
            self._shape_cache.pop(pod["metadata"]["uid"], None)
            return
        node, phase = pod["spec"].get("nodeName"), pod["status"].get("phase")
        if node and not pod_terminal(pod):
            req = dict(self._requests(pod))
            req["pods"] = req.get("pods", 0) + 1000
            self._usage.setdefault(node, Counter()).update(req)
            self._contrib[key] = (node, req)
        if phase == "Pending":
            if node:
                self._bound_pending.add(key)
            else:
                self._unbound[key] = None

    def start(self) -> None:
        with self.store.lock:
            if self.thread is not None or self.closed:
                return
            self.thread = threading.Thread(target=self._run, name="fake-kube-controller", daemon=True)
            self.thread.start()

    def close(self) -> None:
        with self.store.lock:
            self.closed = True
            self.kick.notify_all()
            self.idle.notify_all()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=5)

    def settle(self, timeout: float) -> bool:
        """Wait until every change so far has been reconciled (timed work such as pods running may remain)."""
        deadline = time.monotonic() + timeout
        with self.store.lock:
            while (self.dirty or self.busy) and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0 or self.thread is None:
                    return False
                self.idle.wait(left)
            return True

    def _run(self) -> None:
        with self.store.lock:
            while not self.closed:
                now = time.monotonic()
                if self.dirty or (self.next_due is not None and now >= self.next_due):
                    self.dirty, self.busy = False, True
                    try:
                        self.next_due = self._reconcile(now)
                    except Exception:  # a bug here must show up in the tests, not kill the cluster silently
                        self.errors.append(traceback.format_exc())
                        self.next_due = now + 0.5
                    finally:
                        self.busy = False
                    if not self.dirty:
                        self.idle.notify_all()
                    continue
                self.kick.wait(None if self.next_due is None else max(0.0, self.next_due - now))

    # ------------------------------------------------------------------------------------------------ one pass

    def _reconcile(self, now: float) -> float | None:
        s = self.store
        for uid, due in list(self.pod_due.items()):
            if due <= now:
                self._finish_pod(uid)
        self._collect_deleting_jobs()
        if self._gc_needed:
            self._gc_needed = False
            self._collect_garbage()
        for uid, tr in self.jobs.items():
            job = s.by_uid_get(uid)
            deadline = job and job["spec"].get("activeDeadlineSeconds")
            if deadline is not None and tr.finished is None and now >= tr.started + deadline * self.time_scale:
                self._dirty_jobs.add(uid)
        dirty, self._dirty_jobs = self._dirty_jobs, set()
        for uid in dirty:
            job = s.by_uid_get(uid)
            if job is not None and job["kind"] == "Job":
                self._sync_job(_key(job), job, now)
        for uid in [u for u in self.jobs if u not in s.by_uid]:
            del self.jobs[uid]
        self._schedule()
        self._start_bound_pods(now)
        return self._ttl_and_deadlines(now)

    def _ttl_and_deadlines(self, now: float) -> float | None:
        s = self.store
        candidates = list(self.pod_due.values())
        for key, job in list(s.objects["jobs"].items()):
            tr = self.jobs.get(job["metadata"]["uid"])
            if tr is None:
                continue
            spec = job["spec"]
            if tr.finished is not None:
                ttl = spec.get("ttlSecondsAfterFinished")
                if ttl is not None:
                    due = tr.finished + ttl * self.time_scale
                    if due <= now:
                        # the TTL controller deletes with foreground propagation
                        self.delete_job(key, "Foreground")
                    else:
                        candidates.append(due)
            elif spec.get("activeDeadlineSeconds") is not None:
                candidates.append(tr.started + spec["activeDeadlineSeconds"] * self.time_scale)
        return min(candidates) if candidates else None

    # ------------------------------------------------------------------------------------------------ GC

    def _collect_garbage(self) -> None:
        s = self.store
        for key, pod in list(s.objects["pods"].items()):
            owner = controller_owner(pod)
            if owner and owner.get("kind") == "Job" and owner.get("uid") not in s.by_uid:
                self.delete_pod(key)

    def delete_pod(self, key: Key) -> dict | None:
        final = self.store.delete("pods", key)
        if final is not None:
            self.pod_due.pop(final["metadata"]["uid"], None)
        return final

    def delete_job(self, key: Key, policy: str, *, now: bool = False) -> dict | None:
        """Delete a Job the way the garbage collector does.

        Background removes the Job at once and its pods on the next pass. Foreground and Orphan first mark the
        Job (deletionTimestamp plus the GC finalizer) and return it; the next pass deletes the pods or strips
        their ownerReferences, then removes the Job, so for a moment it is still listed, as on a real cluster.
        """
        s = self.store
        job = s.get("jobs", key)
        if job is None:
            return None
        if policy == "Background" or now:
            if now:
                self._finish_job_deletion(job, policy)
            return s.delete("jobs", key)
        finalizer = "orphan" if policy == "Orphan" else "foregroundDeletion"
        ts = now_rfc3339()

        def mark(j: dict) -> None:
            meta = j["metadata"]
            meta.setdefault("deletionTimestamp", ts)
            meta.setdefault("deletionGracePeriodSeconds", 0)
            if finalizer not in (meta.get("finalizers") or []):
                meta["finalizers"] = (meta.get("finalizers") or []) + [finalizer]

        return s.mutate("jobs", key, mark)

    def _finish_job_deletion(self, job: dict, policy: str) -> None:
        s = self.store
        uid = job["metadata"]["uid"]
        owned = [k for k, p in s.objects["pods"].items() if (controller_owner(p) or {}).get("uid") == uid]
        if policy == "Orphan":
            for k in owned:
                s.mutate("pods", k, lambda p: p["metadata"].update(ownerReferences=[
                    r for r in p["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]))
        else:
            for k in owned:
                self.delete_pod(k)
        self.jobs.pop(uid, None)

    def _collect_deleting_jobs(self) -> None:
        s = self.store
        for uid in list(self._dirty_jobs):
            job = s.by_uid_get(uid)
            if job is None or job["kind"] != "Job" or not job["metadata"].get("deletionTimestamp"):
                continue
            key = _key(job)
            finalizers = job["metadata"].get("finalizers") or []
            policy = "Orphan" if "orphan" in finalizers else "Foreground"
            self._finish_job_deletion(job, policy)
            s.delete("jobs", key)

    # ------------------------------------------------------------------------------------------------ Job controller

    def _sync_job(self, key: Key, job: dict, now: float) -> None:
        s = self.store
        uid = job["metadata"]["uid"]
        tr = self.jobs.get(uid)
        if tr is None:
            tr = self.jobs[uid] = _JobTrack(started=now, start_ts=now_rfc3339())
        if tr.finished is not None:
            return
        spec = job["spec"]
        active: list[tuple[str, int | None, dict]] = []
        for pod_uid, index in list(tr.tracked.items()):
            pod = s.by_uid_get(pod_uid)
            phase = pod["status"].get("phase") if pod else None
            if pod is None or phase == "Failed":
                # A pod deleted before it finished counts as failed, as with the real job-tracking finalizer.
                tr.failed += 1
            elif phase == "Succeeded":
                tr.succeeded += 1
                if index is not None:
                    tr.done.add(index)
            else:
                active.append((pod_uid, index, pod))
                continue
            del tr.tracked[pod_uid]

        parallelism = spec.get("parallelism", 1)
        completions = spec.get("completions")
        indexed = spec.get("completionMode") == "Indexed"
        outcome: tuple[str, str, str] | None = None
        deadline = spec.get("activeDeadlineSeconds")
        if tr.failed > spec.get("backoffLimit", 0):
            outcome = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif deadline is not None and now >= tr.started + deadline * self.time_scale:
            outcome = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        elif indexed and len(tr.done) >= completions:
            outcome = ("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
        elif not indexed and completions is not None and tr.succeeded >= completions:
            outcome = ("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
        elif not indexed and completions is None and tr.succeeded > 0 and not active:
            outcome = ("Complete", "CompletionsReached", "Reached expected number of succeeded pods")

        if outcome is not None:
            for pod_uid, _, pod in active:
                # Once the outcome is decided the controller removes what still runs; those are not counted.
                self.delete_pod(_key(pod))
            tr.tracked.clear()
            tr.finished = now
            self._write_job_status(key, tr, indexed, outcome)
            return

        if spec.get("suspend"):
            for pod_uid, _, pod in active:
                # Suspending removes the running pods without counting them as failures.
                tr.tracked.pop(pod_uid, None)
                self.delete_pod(_key(pod))
        else:
            room = max(0, parallelism - len(active))
            if indexed:
                busy = {index for _, index, _ in active}
                missing = [i for i in range(completions) if i not in tr.done and i not in busy]
                for i in missing[:room]:
                    self._create_job_pod(job, tr, i)
            else:
                want = parallelism if completions is None else min(parallelism, completions - tr.succeeded)
                if completions is None and tr.succeeded > 0:
                    want = 0
                for _ in range(max(0, want - len(active))):
                    self._create_job_pod(job, tr, None)
        self._write_job_status(key, tr, indexed, None)

    def _write_job_status(self, key: Key, tr: _JobTrack, indexed: bool, outcome: tuple[str, str, str] | None):
        s = self.store
        pods = [s.by_uid_get(u) for u in tr.tracked]
        ready = sum(1 for p in pods if p and p["status"].get("phase") == "Running")
        ts = now_rfc3339()

        def change(job: dict) -> None:
            status = job.setdefault("status", {})
            status["startTime"] = status.get("startTime") or tr.start_ts
            # Zero counts are omitted, as the real API does (omitempty).
            for name, value in (("active", len(tr.tracked)), ("succeeded", tr.succeeded), ("failed", tr.failed)):
                if value:
                    status[name] = value
                else:
                    status.pop(name, None)
            status["ready"] = ready
            status["terminating"] = 0
            status["uncountedTerminatedPods"] = {}
            if indexed:
                if tr.done:
                    status["completedIndexes"] = compress_indexes(tr.done)
                else:
                    status.pop("completedIndexes", None)
            if outcome is not None and not status.get("conditions"):
                final, reason, message = outcome
                interim = "SuccessCriteriaMet" if final == "Complete" else "FailureTarget"
                status["conditions"] = [
                    {"type": interim, "status": "True", "reason": reason, "message": message,
                     "lastProbeTime": ts, "lastTransitionTime": ts},
                    {"type": final, "status": "True", "reason": reason, "message": message,
                     "lastProbeTime": ts, "lastTransitionTime": ts},
                ]
                if final == "Complete":
                    status["completionTime"] = ts

        s.mutate("jobs", key, change)

    def _create_job_pod(self, job: dict, tr: _JobTrack, index: int | None) -> None:
        s = self.store
        meta, template = job["metadata"], job["spec"]["template"]
        ns, job_name, uid = meta["namespace"], meta["name"], meta["uid"]
        base = f"{job_name}-{index}-" if index is not None else f"{job_name}-"
        name = base + random_suffix()
        while (ns, name) in s.objects["pods"]:
            name = base + random_suffix()
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": job_name,
                       "controller-uid": uid, "job-name": job_name})
        annotations = dict(tmeta.get("annotations") or {})
        spec = clone(template.get("spec") or {})
        if index is not None:
            labels[INDEX_KEY] = str(index)
            annotations[INDEX_KEY] = str(index)
            spec.setdefault("hostname", f"{job_name}-{index}")
            for c in spec.get("containers") or []:
                env = c.setdefault("env", [])
                if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
                    env.append({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                        "apiVersion": "v1", "fieldPath": f"metadata.labels['{INDEX_KEY}']"}}})
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name, "generateName": base, "namespace": ns, "labels": labels, "annotations": annotations,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": uid,
                                     "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": spec,
        }
        admit_pod(pod)
        created = s.create("pods", pod)
        tr.tracked[created["metadata"]["uid"]] = index

    # ------------------------------------------------------------------------------------------------ scheduler

    def _allocatable(self, node: dict) -> dict[str, int]:
        name, rv = node["metadata"]["name"], node["metadata"]["resourceVersion"]
        cached = self._alloc_cache.get(name)
        if cached and cached[0] == rv:
            return cached[1]
        alloc = {}
        for r, q in (node.get("status", {}).get("allocatable") or {}).items():
            try:
                alloc[r] = milli(q)
            except ValueError:
                pass
        self._alloc_cache[name] = (rv, alloc)
        return alloc

    def _requests(self, pod: dict) -> dict[str, int]:
        uid = pod["metadata"]["uid"]
        req = self._request_cache.get(uid)
        if req is None:
            req = self._request_cache[uid] = pod_requests(pod)
        return req

    def _shape(self, pod: dict, req: dict[str, int]) -> str:
        """Everything about a pod that decides where it fits; pods of one Job share it."""
        uid = pod["metadata"]["uid"]
        shape = self._shape_cache.get(uid)
        if shape is None:
            spec = pod["spec"]
            shape = self._shape_cache[uid] = json.dumps(
                [sorted(req.items()), spec.get("nodeSelector"), spec.get("affinity"), spec.get("tolerations")],
                sort_keys=True)
        return shape

    def _node_failures(self, node: dict, pod: dict, req: dict[str, int], used: Counter) -> list[str]:
        """Why the pod cannot go on the node, in the wording of kube-scheduler's filter plugins."""
        spec = pod["spec"]
        if node.get("spec", {}).get("unschedulable"):
            return ["node(s) were unschedulable"]
        if not node_ready(node):
            return ["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]
        taint = untolerated_taint(node.get("spec", {}).get("taints") or [], spec.get("tolerations") or [])
        if taint is not None:
            return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"]
        if not node_matches_affinity(node, spec):
            return ["node(s) didn't match Pod's node affinity/selector"]
        alloc = self._allocatable(node)
        reasons = []
        if alloc.get("pods", 110_000) - used["pods"] < 1000:
            reasons.append("Too many pods")
        for r, q in sorted(req.items()):
            if alloc.get(r, 0) - used[r] < q:
                reasons.append(f"Insufficient {r}")
        return reasons

    def _schedule(self) -> None:
        s = self.store
        if not self._unbound:
            return
        pods = s.objects["pods"]
        pending = [(k, pods[k]) for k in list(self._unbound)]
        nodes = [s.objects["nodes"][k] for k in sorted(s.objects["nodes"])]
        used: dict[str, Counter] = {}
        for n in nodes:
            used[n["metadata"]["name"]] = self._usage.setdefault(n["metadata"]["name"], Counter())
        # Within one pass usage only grows, so a node that did not fit a pod shape will not fit it later:
        # remembering where each shape last fitted keeps a pass linear in pods + nodes.
        cursor: dict[str, int] = {}
        failed: dict[str, str] = {}
        for key, pod in pending:
            req = self._requests(pod)
            shape = self._shape(pod, req)
            if shape in failed:
                self._mark_unschedulable(key, failed[shape])
                continue
            for i in range(cursor.get(shape, 0), len(nodes)):
                node = nodes[i]
                if not self._node_failures(node, pod, req, used[node["metadata"]["name"]]):
                    cursor[shape] = i
                    self._bind(key, node["metadata"]["name"])  # the write updates the usage index
                    break
            else:
                cursor[shape] = len(nodes)
                failed[shape] = self._explain(pod, req, nodes, used)
                self._mark_unschedulable(key, failed[shape])

    def _explain(self, pod: dict, req: dict[str, int], nodes: list[dict], used: dict[str, Counter]) -> str:
        if not nodes:
            return "no nodes available to schedule pods"
        histogram: Counter = Counter()
        for node in nodes:
            histogram.update(self._node_failures(node, pod, req, used[node["metadata"]["name"]]))
        reasons = sorted(f"{count} {reason}" for reason, count in histogram.items())
        n = len(nodes)
        return (f"0/{n} nodes are available: {', '.join(reasons)}. preemption: 0/{n} nodes are available: "
                f"{n} Preemption is not helpful for scheduling.")

    def _mark_unschedulable(self, key: Key, message: str) -> None:
        pod = self.store.get("pods", key)
        current = next((c for c in pod["status"].get("conditions") or [] if c.get("type") == "PodScheduled"), None)
        if current and (current.get("status"), current.get("reason"), current.get("message")) == (
                "False", "Unschedulable", message):
            return
        ts = now_rfc3339()
        self.store.mutate("pods", key, lambda p: set_condition(p["status"], "PodScheduled", "False", ts,
                                                               "Unschedulable", message))

    def _bind(self, key: Key, node_name: str) -> None:
        ts = now_rfc3339()

        def change(p: dict) -> None:
            p["spec"]["nodeName"] = node_name
            set_condition(p["status"], "PodScheduled", "True", ts)

        self.store.mutate("pods", key, change)

    # ------------------------------------------------------------------------------------------------ kubelet

    def _next_ip(self) -> str:
        self._ip_counter += 1
        n = self._ip_counter
        return f"10.{64 + (n >> 16) % 64}.{(n >> 8) & 255}.{n & 255}"

    def _start_bound_pods(self, now: float) -> None:
        s = self.store
        for key in sorted(self._bound_pending):
            pod = s.objects["pods"][key]
            node = s.get("nodes", ("", pod["spec"]["nodeName"]))
            if node is None or not node_ready(node):
                continue  # a kubelet that is not there starts nothing; the pod stays Pending
            ts, ip = now_rfc3339(), self._next_ip()
            started = s.mutate("pods", key, lambda p: running_status(p, node, ip, ts))
            if started is not None:
                self.pod_due[started["metadata"]["uid"]] = now + runtime_seconds(started) * self.time_scale

    def _finish_pod(self, uid: str) -> None:
        self.pod_due.pop(uid, None)
        pod = self.store.by_uid_get(uid)
        if pod is None or pod["status"].get("phase") != "Running":
            return
        code, ts = exit_code(pod), now_rfc3339()
        self.store.mutate("pods", _key(pod), lambda p: terminated_status(
            p, ts, code=code, reason="Completed" if code == 0 else "Error"))

    def fail_pod(self, key: Key, *, reason: str, message: str, code: int = 1) -> dict | None:
        pod = self.store.get("pods", key)
        if pod is None or pod_terminal(pod):
            return pod
        self.pod_due.pop(pod["metadata"]["uid"], None)
        ts = now_rfc3339()

        def change(p: dict) -> None:
            terminated_status(p, ts, code=code, reason="Error", phase_reason=reason, message=message)

        return self.store.mutate("pods", key, change)

    def node_lost(self, node_name: str, *, removed: bool) -> None:
        """Pods bound to a node that went away or stopped reporting fail (no five-minute eviction grace here)."""
        ts = now_rfc3339()
        condition_reason = "DeletionByPodGC" if removed else "DeletionByTaintManager"
        message = (f"Node {node_name} which was running pod was deleted" if removed
                   else f"Node {node_name} which was running the pod is unresponsive")
        for key, pod in list(self.store.objects["pods"].items()):
            if pod["spec"].get("nodeName") != node_name or pod_terminal(pod):
                continue
            self.pod_due.pop(pod["metadata"]["uid"], None)

            def change(p: dict) -> None:
                terminated_status(p, ts, code=137, reason="Error", phase_reason="NodeLost", message=message)
                set_condition(p["status"], "DisruptionTarget", "True", ts, condition_reason, message)

            self.store.mutate("pods", key, change)

    def set_node_ready(self, node_name: str, ready: bool) -> None:
        s = self.store
        node = s.get("nodes", ("", node_name))
        if node is None:
            raise KeyError(node_name)
        ts = now_rfc3339()
        s.mutate("nodes", ("", node_name), lambda n: n["status"].update(
            conditions=node_conditions(ready, ts, n["status"].get("conditions"))))
        if not ready:
            self.node_lost(node_name, removed=False)
