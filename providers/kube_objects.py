"""Kubernetes objects as the provider needs them: slim records parsed from API JSON, the Job Spillover
creates, and the mapping from a Job and its pods to a JobStatus.

Records keep only the fields the provider reads, so a cache of thousands of pods stays small and cheap to scan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from spillover.providers.contract import DispatchRequest, JobPhase, JobStatus
from spillover.providers.kube_settings import (
    HOSTNAME_LABEL,
    JOB_ID_LABEL,
    MANAGED_BY,
    MANAGER,
    QUEUE_LABEL,
    REQUEST_ID_ANNOTATION,
    RESUME_ANNOTATION,
    RUNTIME_ANNOTATION,
    KubeSettings,
    PoolInfo,
)

GIB = float(1 << 30)
TERMINAL_POD_PHASES = ("Succeeded", "Failed")
BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")
# GPU types as catalogs and job specs name them. GPU feature discovery labels the full product name
# (NVIDIA-A100-SXM4-80GB, Tesla-V100-SXM2-16GB); its family token is the type.
GPU_FAMILIES = frozenset({"GB200", "B200", "B100", "GH200", "H200", "H100", "H800", "A100", "A800", "A10G", "A10",
                          "A30", "A40", "L40S", "L40", "L4", "V100", "T4", "P100", "P4", "MI300X", "MI250X"})


def gpu_type_of(product: str, aliases: Mapping[str, str]) -> str:
    """The GPU type of a node's product label: an alias from the config, else the family named in it, else
    the label itself."""
    if product in aliases:
        return aliases[product]
    for token in re.split(r"[-_\s]+", product.upper()):
        if token in GPU_FAMILIES:
            return token
    return product

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d+))?(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_SUFFIX = {
    None: 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}

Json = dict[str, Any]


def parse_quantity(value: Any) -> float:
    """A Kubernetes resource quantity ("500m", "64Gi", "1e3", 8) as a float in base units; 0 if malformed."""
    if value is None:
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    m = _QUANTITY.match(str(value).strip())
    if not m:
        return 0.0
    number = float(m.group(1))
    if m.group(2):
        number *= 10.0 ** int(m.group(2))
    return number * _SUFFIX[m.group(3)]


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp from the API as seconds since the epoch."""
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def cpu_quantity(cores: float) -> str:
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(gib: float) -> str:
    mib = round(gib * 1024)
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """Whether any toleration matches the taint, with kube-scheduler's rules."""
    for t in tolerations:
        effect = t.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        key = t.get("key") or ""
        if (t.get("operator") or "Equal") == "Exists":
            if not key or key == taint.get("key"):
                return True
            continue
        if key == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


# ---- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    gpu_type: str | None
    gpu_product: str | None  # the label's own value, which a Job's node selector must name
    pool: str | None
    gpus: int
    cpu: float
    memory_gib: float
    ready: bool
    unschedulable: bool
    blocking_taint: str | None  # a NoSchedule/NoExecute taint our Jobs do not tolerate

    @property
    def usable(self) -> bool:
        return self.ready and not self.unschedulable and self.blocking_taint is None


@dataclass(frozen=True, slots=True)
class PodRecord:
    namespace: str
    name: str
    node: str | None
    phase: str
    gpus: float
    cpu: float
    memory_gib: float
    job_id: str | None  # Spillover's label; None for everybody else's pods
    owner_uid: str | None  # the controlling Job's uid
    started_at: float | None
    unschedulable_since: float | None
    unschedulable_message: str
    failure: str  # why a container terminated unsuccessfully, e.g. "OOMKilled (exit 137)"
    deleting: bool
    disrupted: str = ""  # why the pod was taken away (its node lost or reclaimed), not failed by its own doing

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_POD_PHASES


@dataclass(frozen=True, slots=True)
class JobRecord:
    namespace: str
    name: str
    uid: str
    job_id: str
    queue: str | None
    pool: str | None  # the pool the pod template is pinned to
    gang: int  # pods that must run together
    completions: int
    succeeded: int
    outcome: str | None  # "Complete" or "Failed" once the Job controller decided
    finished_at: float | None
    message: str
    start_time: float | None
    request_id: str = ""  # the dispatch that created it
    deleting: bool = False


def _meta(obj: Json) -> Json:
    return obj.get("metadata") or {}


def object_key(obj: Json) -> str:
    m = _meta(obj)
    ns = m.get("namespace")
    return f"{ns}/{m.get('name')}" if ns else str(m.get("name"))


def node_record(obj: Json, settings: KubeSettings, pools: Mapping[str, PoolInfo]) -> NodeRecord:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    labels = meta.get("labels") or {}
    alloc = status.get("allocatable") or {}
    pool = labels.get(settings.pool_label) if settings.pool_label else None
    product = labels.get(settings.gpu_product_label) or None
    gpu_type = gpu_type_of(product, settings.gpu_product_aliases) if product else None
    if not gpu_type and pool in pools and pools[pool].gpu_type:
        gpu_type = pools[pool].gpu_type  # GPU feature discovery labels a new node a little after it joins
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())
    blocking = None
    for taint in spec.get("taints") or ():
        if taint.get("effect") in BLOCKING_EFFECTS and not tolerates(settings.tolerations, taint):
            blocking = f"{taint.get('key')}:{taint.get('effect')}"
            break
    return NodeRecord(
        name=str(meta.get("name")), gpu_type=gpu_type or None, gpu_product=product, pool=pool,
        gpus=int(parse_quantity(alloc.get(settings.gpu_resource))), cpu=parse_quantity(alloc.get("cpu")),
        memory_gib=parse_quantity(alloc.get("memory")) / GIB, ready=ready,
        unschedulable=bool(spec.get("unschedulable")), blocking_taint=blocking,
    )


def _container_requests(c: Json, gpu_resource: str) -> tuple[float, float, float]:
    res = c.get("resources") or {}
    req, lim = res.get("requests") or {}, res.get("limits") or {}

    # a container that sets only limits gets requests equal to them (API defaulting)
    def amount(name: str) -> float:
        return parse_quantity(req[name] if name in req else lim.get(name))

    return amount(gpu_resource), amount("cpu"), amount("memory")


def pod_requests(spec: Json, gpu_resource: str) -> tuple[float, float, float]:
    """What the scheduler reserves for a pod: (GPUs, cores, bytes), init containers and overhead included."""
    gpus = cpu = mem = 0.0
    for c in spec.get("containers") or ():
        g, cp, m = _container_requests(c, gpu_resource)
        gpus, cpu, mem = gpus + g, cpu + cp, mem + m
    # sidecars (restartable init containers) run alongside; plain init containers run alone before the rest
    peak_g = peak_c = peak_m = 0.0
    side_g = side_c = side_m = 0.0
    for c in spec.get("initContainers") or ():
        g, cp, m = _container_requests(c, gpu_resource)
        if c.get("restartPolicy") == "Always":
            side_g, side_c, side_m = side_g + g, side_c + cp, side_m + m
        else:
            peak_g, peak_c, peak_m = max(peak_g, side_g + g), max(peak_c, side_c + cp), max(peak_m, side_m + m)
    gpus, cpu, mem = max(gpus + side_g, peak_g), max(cpu + side_c, peak_c), max(mem + side_m, peak_m)
    overhead = spec.get("overhead") or {}
    return (gpus + parse_quantity(overhead.get(gpu_resource)), cpu + parse_quantity(overhead.get("cpu")),
            mem + parse_quantity(overhead.get("memory")))


def _pod_failure(status: Json) -> str:
    for cs in status.get("containerStatuses") or ():
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term and term.get("exitCode", 0) != 0:
            return f"container {cs.get('name')}: {term.get('reason') or 'Error'} (exit {term.get('exitCode')})"
    if status.get("phase") == "Failed" and (status.get("reason") or status.get("message")):
        return f"{status.get('reason') or ''} {status.get('message') or ''}".strip()
    return ""


def pod_record(obj: Json, settings: KubeSettings) -> PodRecord:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    labels = meta.get("labels") or {}
    gpus, cpu, mem = pod_requests(spec, settings.gpu_resource)
    owner = next((o.get("uid") for o in meta.get("ownerReferences") or () if o.get("controller")), None)
    since, why, disrupted = None, "", ""
    for c in status.get("conditions") or ():
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            since, why = parse_time(c.get("lastTransitionTime")), str(c.get("message") or "Unschedulable")
        elif c.get("type") == "DisruptionTarget" and c.get("status") == "True":
            # set by the taint manager, pod GC or a node's graceful shutdown: a spot reclaim or a lost node
            disrupted = str(c.get("message") or c.get("reason") or "disrupted")
    if not disrupted and status.get("reason") in ("NodeLost", "Terminated", "Shutdown", "NodeShutdown"):
        disrupted = str(status.get("message") or status.get("reason"))
    phase = str(status.get("phase") or "Pending")
    job_id = labels.get(JOB_ID_LABEL)
    return PodRecord(
        namespace=str(meta.get("namespace")), name=str(meta.get("name")), node=spec.get("nodeName") or None,
        phase=phase, gpus=gpus, cpu=cpu, memory_gib=mem / GIB, job_id=job_id, owner_uid=owner,
        started_at=parse_time(status.get("startTime")), unschedulable_since=since, unschedulable_message=why,
        failure=_pod_failure(status) if job_id and phase == "Failed" else "",
        deleting=bool(meta.get("deletionTimestamp")), disrupted=disrupted,
    )


def job_record(obj: Json, settings: KubeSettings) -> JobRecord:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    labels = meta.get("labels") or {}
    selector = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    completions = int(spec.get("completions") or 1)
    outcome, finished, message = None, parse_time(status.get("completionTime")), ""
    for c in status.get("conditions") or ():
        if c.get("status") != "True":
            continue
        kind = c.get("type")
        # FailureTarget precedes Failed while the last pods terminate: the outcome is already decided
        if kind in ("Complete", "Failed", "FailureTarget") and outcome != "Complete":
            outcome = "Complete" if kind == "Complete" else "Failed"
            detail = ": ".join(str(x) for x in (c.get("reason"), c.get("message")) if x)
            message = detail or message
            if outcome == "Failed":
                finished = finished or parse_time(c.get("lastTransitionTime"))
    return JobRecord(
        namespace=str(meta.get("namespace")), name=str(meta.get("name")), uid=str(meta.get("uid") or ""),
        job_id=str(labels.get(JOB_ID_LABEL) or meta.get("name")), queue=labels.get(QUEUE_LABEL),
        pool=selector.get(settings.pool_label) if settings.pool_label else None,
        gang=int(spec.get("parallelism") or completions), completions=completions,
        succeeded=int(status.get("succeeded") or 0), outcome=outcome, finished_at=finished,
        message=message, start_time=parse_time(status.get("startTime")),
        request_id=str((meta.get("annotations") or {}).get(REQUEST_ID_ANNOTATION) or ""),
        deleting=bool(meta.get("deletionTimestamp")),
    )


# ---- a Job and its pods, as the loop sees it ----------------------------------------------------


def job_status(job: JobRecord, pods: Sequence[PodRecord], pool_of: Callable[[str], str | None]) -> JobStatus:
    """Complete -> SUCCEEDED, Failed -> FAILED, the whole gang Running -> RUNNING, else PENDING."""
    mine = [p for p in pods if p.owner_uid in (None, job.uid)]
    ran = [p for p in mine if p.node and (p.phase in ("Running", *TERMINAL_POD_PHASES))]
    first_start = min((p.started_at for p in ran if p.started_at is not None), default=None)
    pool = job.pool
    if job.outcome is not None:
        nodes = tuple(sorted({p.node for p in ran if p.node}))
        pool = pool or next((pool_of(n) for n in nodes if pool_of(n)), None)
        message = job.message
        failure = next((p.failure for p in mine if p.failure), "")
        disrupted = next((p.disrupted for p in mine if p.disrupted), "") if job.outcome == "Failed" else ""
        if job.outcome == "Failed" and (disrupted or failure):
            detail = f"interrupted: {disrupted}" if disrupted else failure
            message = f"{message}; {detail}" if message else detail
        return JobStatus(job_id=job.job_id, queue=job.queue, pool=pool, nodes=nodes,
                         phase=JobPhase.SUCCEEDED if job.outcome == "Complete" else JobPhase.FAILED,
                         started_at=first_start if first_start is not None else job.start_time,
                         finished_at=job.finished_at, message=message, interrupted=bool(disrupted))
    running = [p for p in mine if p.phase == "Running" and p.node and not p.deleting]
    # a replica of an Indexed gang may finish before the others; it still counts as part of the run
    if running and len(running) + job.succeeded >= job.gang:
        nodes = tuple(sorted({p.node for p in ran if p.node and p.phase != "Failed"}))
        pool = pool or next((pool_of(n) for n in nodes if pool_of(n)), None)
        return JobStatus(job_id=job.job_id, phase=JobPhase.RUNNING, queue=job.queue, pool=pool, nodes=nodes,
                         started_at=first_start)
    waiting = [p for p in mine if p.unschedulable_since is not None and not p.terminal]
    since = min((p.unschedulable_since for p in waiting if p.unschedulable_since is not None), default=None)
    message = next((p.unschedulable_message for p in waiting if p.unschedulable_since == since), "")
    if not message and mine:
        message = f"{len(running)} of {job.gang} pods running"
    return JobStatus(job_id=job.job_id, phase=JobPhase.PENDING, queue=job.queue, pool=pool,
                     unschedulable_since=since, message=message)


# ---- the Job Spillover creates ------------------------------------------------------------------


def job_manifest(request: DispatchRequest, namespace: str, settings: KubeSettings,
                 products: Callable[[str], Sequence[str]] | None = None) -> Json:
    """The batch/v1 Job for one dispatch; its name is the job id, so a retry collides instead of duplicating.

    `products(gpu_type)` names the product label values of the cluster's nodes of that type, so a Job pinned
    to "A100" lands on nodes labelled NVIDIA-A100-SXM4-80GB. A type no node has yet is pinned by its own name,
    except in a pool (one instance type), whose first nodes may join before they are labelled.
    """
    pinned_by_pool = bool(settings.pool_label and request.pool)

    def values(types: Iterable[str]) -> list[str]:
        out: list[str] = []
        for t in types:
            known = list(products(t)) if products else []
            if not known and pinned_by_pool:
                return []
            for v in known or [t]:
                if v not in out:
                    out.append(v)
        return out

    spec = request.spec
    labels = {JOB_ID_LABEL: request.job_id, QUEUE_LABEL: spec.queue, MANAGED_BY: MANAGER}
    annotations = {REQUEST_ID_ANNOTATION: request.request_id, RUNTIME_ANNOTATION: repr(float(spec.estimated_runtime_s))}
    gpus = str(spec.gpus)
    container: Json = {
        "name": "train",
        "image": spec.image,
        "resources": {
            "requests": {"cpu": cpu_quantity(spec.cpu), "memory": memory_quantity(spec.memory_gib),
                         settings.gpu_resource: gpus},
            # extended resources cannot be overcommitted: the API requires the limit to equal the request
            "limits": {settings.gpu_resource: gpus},
        },
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    env = dict(spec.env)
    if request.progress > 0:
        annotations[RESUME_ANNOTATION] = f"{request.progress:.6f}"
        env.setdefault("SPILLOVER_RESUME_FROM", f"{request.progress:.6f}")
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    selector = dict(settings.node_selector)
    if settings.pool_label and request.pool:
        selector[settings.pool_label] = request.pool
    allowed = values([request.gpu_type] if request.gpu_type else spec.gpu_types)
    if len(allowed) == 1:
        selector[settings.gpu_product_label] = allowed[0]
    pod_spec: Json = {"restartPolicy": "Never", "containers": [container]}
    if selector:
        pod_spec["nodeSelector"] = selector
    if settings.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in settings.tolerations]
    affinity: Json = {}
    if len(allowed) > 1:
        # several product names of the chosen type, or no type chosen yet and the owner allowed several
        affinity["nodeAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": settings.gpu_product_label, "operator": "In", "values": allowed}]}]}}
    job_spec: Json = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
        "completions": spec.nodes,
        "parallelism": spec.nodes,
        "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod_spec},
    }
    if spec.nodes > 1:
        job_spec["completionMode"] = "Indexed"
        # a gang is whole nodes, one replica each: two replicas on one node would split its GPUs
        affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {JOB_ID_LABEL: request.job_id}}, "topologyKey": HOSTNAME_LABEL}]}
    if affinity:
        pod_spec["affinity"] = affinity
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": request.job_id, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": job_spec,
    }
