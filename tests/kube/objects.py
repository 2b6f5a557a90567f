"""What the API server fills in and checks on create: defaults, validation, and the shapes of nodes and pod status."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from .matching import milli, validate_labels, validate_name

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
RUNTIME_ANNOTATION = "spillover/estimated-runtime-s"
EXIT_CODE_ANNOTATION = "spillover/exit-code"
GPU = "nvidia.com/gpu"

Problem = tuple[str, str]  # (field path, message)


def random_suffix(n: int = 5) -> str:
    # The alphabet the real name generator uses (no vowels, no ambiguous characters).
    return "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


def short_hash(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


# ---------------------------------------------------------------------------------------------------- metadata

def check_metadata(obj: dict, *, label_name: bool) -> list[Problem]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return [("metadata", "Required value")]
    problems: list[Problem] = []
    name = meta.get("name")
    if not name:
        problems.append(("metadata.name", "Required value: name or generateName is required"))
    elif not isinstance(name, str):
        problems.append(("metadata.name", "Invalid value: must be a string"))
    else:
        why = validate_name(name, label=label_name)
        if why:
            problems.append(("metadata.name", why))
    problems += validate_labels(meta.get("labels"), "metadata.labels")
    annotations = meta.get("annotations")
    if annotations is not None and (not isinstance(annotations, dict)
                                    or not all(isinstance(v, str) for v in annotations.values())):
        problems.append(("metadata.annotations", "Invalid value: annotation values must be strings"))
    return problems


def strip_server_fields(obj: dict) -> None:
    """Fields a client may not set on create: the server owns them."""
    meta = obj.setdefault("metadata", {})
    for field in ("uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp",
                  "deletionGracePeriodSeconds", "selfLink", "managedFields"):
        meta.pop(field, None)


# ---------------------------------------------------------------------------------------------------- namespaces

def default_namespace(obj: dict) -> None:
    meta = obj["metadata"]
    meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
    obj["spec"] = {"finalizers": ["kubernetes"]}
    obj["status"] = {"phase": "Active"}


# ---------------------------------------------------------------------------------------------------- nodes

def node_conditions(ready: bool, ts: str, previous: list[dict] | None = None) -> list[dict]:
    prev = {c.get("type"): c for c in previous or []}

    def cond(type_: str, status: str, reason: str, message: str) -> dict:
        old = prev.get(type_)
        changed = old is None or old.get("status") != status
        return {"type": type_, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": ts,
                "lastTransitionTime": ts if changed else old.get("lastTransitionTime", ts)}

    conditions = [
        cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ]
    if ready:
        conditions.append(cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"))
    else:
        conditions.append(cond("Ready", "False", "NodeStatusUnknown", "Kubelet stopped posting node status."))
    return conditions


def normalize_taints(taints: Any) -> list[dict]:
    """Taints given as dicts or as kubectl-style "key=value:Effect" strings."""
    out = []
    for taint in taints or []:
        if isinstance(taint, str):
            keyval, _, effect = taint.rpartition(":")
            key, _, value = keyval.partition("=")
            taint = {"key": key, "effect": effect, **({"value": value} if value else {})}
        out.append({k: v for k, v in dict(taint).items() if v is not None})
    return out


def node_object(name: str, *, gpus: int, gpu_product: str, cpu: Any, memory_gib: Any, labels: dict | None,
                taints: Any, ready: bool, unschedulable: bool, ip: str, ts: str) -> dict:
    resources = {"cpu": str(cpu), "memory": f"{memory_gib}Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    node_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    }
    if gpus:
        # A node without GPUs has no such resource at all, and GPU feature discovery does not label it.
        resources[GPU] = str(gpus)
        node_labels["nvidia.com/gpu.product"] = gpu_product
        node_labels["nvidia.com/gpu.count"] = str(gpus)
        node_labels["nvidia.com/gpu.present"] = "true"
    node_labels.update(labels or {})
    spec: dict = {"providerID": f"fake://{name}"}
    if taints:
        spec["taints"] = normalize_taints(taints)
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels, "annotations": {}},
        "spec": spec,
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": node_conditions(ready, ts),
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "architecture": "amd64", "bootID": short_hash("boot" + name, 32), "containerRuntimeVersion":
                "containerd://1.7.20", "kernelVersion": "6.1.0-fake", "kubeProxyVersion": "v1.31.0",
                "kubeletVersion": "v1.31.0", "machineID": short_hash("machine" + name, 32),
                "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": short_hash("uuid" + name, 32),
            },
            "phase": "Running",
        },
    }


def default_node(obj: dict, ip: str, ts: str) -> None:
    """A Node posted through the API: assume a healthy kubelet is behind it."""
    obj.setdefault("spec", {})
    status = obj.setdefault("status", {})
    status.setdefault("capacity", {"cpu": "1", "memory": "1Gi", "pods": "110"})
    status.setdefault("allocatable", dict(status["capacity"]))
    if not status.get("conditions"):
        status["conditions"] = node_conditions(True, ts)
    status.setdefault("addresses", [{"type": "InternalIP", "address": ip},
                                    {"type": "Hostname", "address": obj["metadata"]["name"]}])
    labels = obj["metadata"].setdefault("labels", {})
    labels.setdefault("kubernetes.io/hostname", obj["metadata"]["name"])


def node_ready(node: dict) -> bool:
    for c in node.get("status", {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


# ---------------------------------------------------------------------------------------------------- pods

_DEFAULT_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
]


def check_pod_spec(spec: Any, field: str) -> list[Problem]:
    if not isinstance(spec, dict):
        return [(field, "Required value")]
    containers = spec.get("containers")
    if not containers or not isinstance(containers, list):
        return [(f"{field}.containers", "Required value")]
    problems: list[Problem] = []
    for i, c in enumerate(containers):
        if not isinstance(c, dict) or not c.get("name"):
            problems.append((f"{field}.containers[{i}].name", "Required value"))
        elif not c.get("image"):
            problems.append((f"{field}.containers[{i}].image", "Required value"))
        for kind in ("requests", "limits"):
            for res, q in ((c.get("resources") or {}).get(kind) or {}).items() if isinstance(c, dict) else ():
                try:
                    milli(q)
                except (ValueError, ZeroDivisionError):
                    problems.append((f"{field}.containers[{i}].resources.{kind}[{res}]",
                                     f'Invalid value: "{q}": quantities must match the regular expression '
                                     "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"))
    return problems


def default_pod_spec(spec: dict) -> None:
    """The defaulting the API server and admission apply to every pod spec (including Job templates)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("enableServiceLinks", True)
    for c in spec.get("containers") or []:
        image = c.get("image", "")
        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        resources = c.setdefault("resources", {})
        # Limits without requests mean requests equal to the limits: this is how a GPU limit becomes a request.
        limits = resources.get("limits") or {}
        if limits:
            requests = resources.setdefault("requests", {})
            for res, q in limits.items():
                requests.setdefault(res, q)


def admit_pod(pod: dict) -> None:
    """Admission that runs on pods (not templates): default tolerations, priority, QoS."""
    spec = pod["spec"]
    tolerations = spec.setdefault("tolerations", [])
    for t in _DEFAULT_TOLERATIONS:
        if not any(x.get("key") == t["key"] and x.get("effect") == t["effect"] for x in tolerations):
            tolerations.append(dict(t))
    spec.setdefault("priority", 0)
    status = pod.setdefault("status", {})
    status["phase"] = "Pending"
    status["qosClass"] = qos_class(spec)


def qos_class(spec: dict) -> str:
    containers = spec.get("containers") or []
    any_set, guaranteed = False, True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        any_set = any_set or bool(req) or bool(lim)
        for r in ("cpu", "memory"):
            if r not in lim or (r in req and milli(req[r]) != milli(lim[r])):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def pod_requests(pod: dict) -> dict[str, int]:
    """Effective requests in thousandths: the sum over containers, or the largest init container if larger."""
    spec = pod.get("spec") or {}

    def requests_of(c: dict) -> dict[str, int]:
        res = c.get("resources") or {}
        merged = dict(res.get("limits") or {})
        merged.update(res.get("requests") or {})
        return {r: milli(q) for r, q in merged.items()}

    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        for r, q in requests_of(c).items():
            total[r] = total.get(r, 0) + q
    for c in spec.get("initContainers") or []:
        for r, q in requests_of(c).items():
            total[r] = max(total.get(r, 0), q)
    return {r: q for r, q in total.items() if q}


def runtime_seconds(pod: dict) -> float:
    raw = (pod["metadata"].get("annotations") or {}).get(RUNTIME_ANNOTATION)
    try:
        return max(0.0, float(raw)) if raw is not None else 1.0
    except ValueError:
        return 1.0


def exit_code(pod: dict) -> int:
    raw = (pod["metadata"].get("annotations") or {}).get(EXIT_CODE_ANNOTATION)
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 1


def set_condition(status: dict, type_: str, cond_status: str, ts: str, reason: str | None = None,
                  message: str | None = None) -> None:
    """Replace one condition, keeping lastTransitionTime when the status did not flip."""
    conditions = status.setdefault("conditions", [])
    old = next((c for c in conditions if c.get("type") == type_), None)
    new = {"type": type_, "status": cond_status}
    if reason:
        new["reason"] = reason
    if message:
        new["message"] = message
    new["lastProbeTime"] = None
    new["lastTransitionTime"] = old["lastTransitionTime"] if old and old.get("status") == cond_status \
        and old.get("lastTransitionTime") else ts
    if old is None:
        conditions.append(new)
    else:
        conditions[conditions.index(old)] = new


def image_id(image: str) -> str:
    ref = image if "/" in image else f"docker.io/library/{image}"
    return f"{ref.split(':')[0]}@sha256:{short_hash(image, 64)}"


def running_status(pod: dict, node: dict, pod_ip: str, ts: str) -> None:
    status = pod["status"]
    host_ip = next((a["address"] for a in node["status"].get("addresses") or [] if a.get("type") == "InternalIP"),
                   "10.0.0.1")
    status.update({"phase": "Running", "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": pod_ip,
                   "podIPs": [{"ip": pod_ip}], "startTime": ts})
    for type_ in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"):
        set_condition(status, type_, "True", ts)
    status["containerStatuses"] = [
        {"name": c["name"], "image": c.get("image", ""), "imageID": image_id(c.get("image", "")),
         "containerID": "containerd://" + short_hash(pod["metadata"]["uid"] + c["name"], 64), "ready": True,
         "started": True, "restartCount": 0, "state": {"running": {"startedAt": ts}}}
        for c in pod["spec"].get("containers") or []
    ]


def terminated_status(pod: dict, ts: str, *, code: int, reason: str, phase_reason: str | None = None,
                      message: str | None = None) -> None:
    status = pod["status"]
    status["phase"] = "Succeeded" if code == 0 and phase_reason is None else "Failed"
    if phase_reason:
        status["reason"] = phase_reason
    if message:
        status["message"] = message
    cond_reason = "PodCompleted" if status["phase"] == "Succeeded" else "PodFailed"
    for type_ in ("Ready", "ContainersReady"):
        set_condition(status, type_, "False", ts, cond_reason)
    if status.get("conditions") and any(c["type"] == "PodReadyToStartContainers" for c in status["conditions"]):
        set_condition(status, "PodReadyToStartContainers", "False", ts)
    started = {cs["name"]: cs for cs in status.get("containerStatuses") or []}
    out = []
    for c in pod["spec"].get("containers") or []:
        prev = started.get(c["name"], {})
        running = (prev.get("state") or {}).get("running") or {}
        term = {"exitCode": code, "reason": reason, "startedAt": running.get("startedAt", ts), "finishedAt": ts}
        if prev.get("containerID"):
            term["containerID"] = prev["containerID"]
        out.append({"name": c["name"], "image": c.get("image", ""), "imageID": prev.get("imageID", ""),
                    "containerID": prev.get("containerID", ""), "ready": False, "started": False,
                    "restartCount": 0, "state": {"terminated": term}})
    status["containerStatuses"] = out


def pod_terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def controller_owner(obj: dict) -> dict | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


# ---------------------------------------------------------------------------------------------------- jobs

def check_job(job: dict) -> list[Problem]:
    spec = job.get("spec")
    if not isinstance(spec, dict):
        return [("spec", "Required value")]
    problems: list[Problem] = []
    template = spec.get("template")
    if not isinstance(template, dict):
        return [("spec.template", "Required value")]
    problems += validate_labels((template.get("metadata") or {}).get("labels"), "spec.template.metadata.labels")
    problems += check_pod_spec(template.get("spec"), "spec.template.spec")
    policy = (template.get("spec") or {}).get("restartPolicy") or "Always"
    if policy not in ("Never", "OnFailure"):
        problems.append(("spec.template.spec.restartPolicy",
                         f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"'))
    for field in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        value = spec.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            problems.append((f"spec.{field}", f"Invalid value: {value}: must be greater than or equal to 0"))
    mode = spec.get("completionMode") or "NonIndexed"
    if mode not in ("NonIndexed", "Indexed"):
        problems.append(("spec.completionMode", f'Unsupported value: "{mode}": supported values: "NonIndexed", '
                                                '"Indexed"'))
    if mode == "Indexed" and spec.get("completions") is None:
        problems.append(("spec.completions", "Required value: when completion mode is Indexed"))
    if spec.get("selector") is not None and not spec.get("manualSelector"):
        problems.append(("spec.selector", "Invalid value: `selector` will be auto-generated"))
    return problems


def default_job(job: dict) -> None:
    """Defaults as the batch/v1 REST strategy applies them, except backoffLimit (0 here, 6 in Kubernetes)."""
    spec = job["spec"]
    if spec.get("parallelism") is None and spec.get("completions") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("backoffLimit", 0)
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    uid = job["metadata"]["uid"]
    name = job["metadata"]["name"]
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    template_meta = spec["template"].setdefault("metadata", {})
    template_meta.setdefault("labels", {}).update({
        "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
        "controller-uid": uid, "job-name": name,
    })
    default_pod_spec(spec["template"].setdefault("spec", {}))
    job["status"] = {}


def compress_indexes(indexes: set[int]) -> str:
    """Completed indexes the way Job status writes them: "0-3,5,7-8"."""
    out, run = [], []
    for i in sorted(indexes):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


# ---------------------------------------------------------------------------------------------------- app kinds

def check_deployment(obj: dict) -> list[Problem]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [("spec", "Required value")]
    problems: list[Problem] = []
    selector = spec.get("selector")
    template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        problems.append(("spec.selector", "Required value"))
    elif any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        problems.append(("spec.template.metadata.labels", f"Invalid value: {labels}: `selector` does not match "
                                                          "template `labels`"))
    problems += validate_labels(labels, "spec.template.metadata.labels")
    problems += check_pod_spec(template.get("spec"), "spec.template.spec")
    replicas = spec.get("replicas")
    if replicas is not None and (not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0):
        problems.append(("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0"))
    return problems


def default_deployment(obj: dict) -> None:
    """The apps/v1 defaults a client sees come back (kubectl's three-way patches must leave them alone)."""
    spec = obj["spec"]
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    default_pod_spec(spec["template"].setdefault("spec", {}))
    obj["status"] = {}


def check_service(obj: dict) -> list[Problem]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [("spec", "Required value")]
    problems: list[Problem] = []
    ports = spec.get("ports") or []
    if not ports and spec.get("clusterIP") != "None":
        problems.append(("spec.ports", "Required value"))
    names = [p.get("name") for p in ports if isinstance(p, dict)]
    if len(ports) > 1 and (not all(names) or len(set(names)) != len(names)):
        problems.append(("spec.ports", "Required value: port names must be set and unique with several ports"))
    for i, p in enumerate(ports):
        if not isinstance(p, dict) or not isinstance(p.get("port"), int):
            problems.append((f"spec.ports[{i}].port", "Required value"))
    return problems


def default_service(obj: dict, cluster_ip: str) -> None:
    spec = obj["spec"]
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("ipFamilies", ["IPv4"])
    if spec.get("clusterIP") in (None, ""):
        spec["clusterIP"] = cluster_ip
    spec["clusterIPs"] = [spec["clusterIP"]]
    for p in spec.get("ports") or []:
        p.setdefault("protocol", "TCP")
        p.setdefault("targetPort", p.get("port"))
    obj["status"] = {"loadBalancer": {}}


def default_secret(obj: dict) -> None:
    """stringData is write-only: the server folds it into data, base64-encoded, and keeps no copy."""
    import base64

    obj.setdefault("type", "Opaque")
    strings = obj.pop("stringData", None) or {}
    if strings:
        data = obj.setdefault("data", {})
        for key, value in strings.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def check_crd(obj: dict) -> list[Problem]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [("spec", "Required value")]
    problems: list[Problem] = []
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    group = spec.get("group")
    for field, value in (("spec.group", group), ("spec.names.plural", names.get("plural")),
                         ("spec.names.kind", names.get("kind"))):
        if not value or not isinstance(value, str):
            problems.append((field, "Required value"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        problems.append(("spec.scope", f'Unsupported value: "{spec.get("scope")}": supported values: "Cluster", '
                                       '"Namespaced"'))
    versions = spec.get("versions") if isinstance(spec.get("versions"), list) else []
    if sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        problems.append(("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
    name = (obj.get("metadata") or {}).get("name")
    if group and names.get("plural") and name != f"{names['plural']}.{group}":
        problems.append(("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'))
    return problems


def crd_resources(obj: dict) -> dict[str, dict]:
    """What a CRD serves, as resource-table entries: one per served version, all under its plural."""
    spec = obj["spec"]
    names = spec["names"]
    served = [v["name"] for v in spec["versions"] if v.get("served")]
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    version = storage if storage in served else (served[0] if served else storage)
    return {names["plural"]: {
        "kind": names["kind"], "apiVersion": f"{spec['group']}/{version}", "group": spec["group"],
        "namespaced": spec["scope"] == "Namespaced", "singular": names.get("singular") or names["kind"].lower(),
        "shortNames": list(names.get("shortNames") or []), "categories": list(names.get("categories") or []),
        "custom": True,
    }}


def default_crd(obj: dict, ts: str) -> None:
    names = obj["spec"]["names"]
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", names["kind"] + "List")
    obj["status"] = {
        "acceptedNames": dict(names),
        "storedVersions": [v["name"] for v in obj["spec"]["versions"] if v.get("storage")],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": ts},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": ts},
        ],
    }
