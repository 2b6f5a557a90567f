"""The provider for a member cluster's Kubernetes API: capacity and Spillover Jobs from watch caches,
Jobs dispatched and cancelled through the official client.

Observation reads four informer-style caches (nodes; unfinished pods; Spillover's pods; Spillover's Jobs)
that background threads keep current from watches, plus one small probe request per observe that proves
the API still answers (a watch on a half-open connection can hang silently for a long time). So a
steady-state observe costs one request however large the cluster, and a cluster that went away is reported
UNREACHABLE as fast as the probe fails. Dispatch, cancel and job_status go to the API directly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_fixed

from spillover.providers.contract import (
    Clock,
    ClusterState,
    DispatchRequest,
    ErrorKind,
    JobStatus,
    NodeInfo,
    PoolState,
    ProviderError,
)
from spillover.providers.kube_cache import ErrorSink, Reflector
from spillover.providers.kube_errors import Redactor, classify, first, safe_host, status_body
from spillover.providers.kube_objects import (
    TERMINAL_POD_PHASES,
    Json,
    JobRecord,
    NodeRecord,
    PodRecord,
    job_manifest,
    job_record,
    job_status,
    node_record,
    pod_record,
)
from spillover.providers.kube_settings import JOB_ID_LABEL, MANAGED_BY, MANAGER, REQUEST_ID_ANNOTATION, KubeSettings, PoolInfo

__all__ = ["KubeSettings", "KubernetesProvider", "PoolInfo"]

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE = (ErrorKind.THROTTLED, ErrorKind.TRANSIENT)
UNFINISHED_PODS = "status.phase!=Succeeded,status.phase!=Failed"  # kube-scheduler's own pod filter
OURS = f"{MANAGED_BY}={MANAGER}"


class _WallClock:
    def now(self) -> float:
        return time.time()


def build_api_client(settings: KubeSettings) -> k8s.ApiClient:
    """A client from the pod's service account or from a kubeconfig context; raises ProviderError."""
    configuration = k8s.Configuration()
    # urllib3 would retry a GET three times by default, so an API that stopped answering would take four
    # request timeouts to report; one retry still covers a kept-alive connection the server closed.
    configuration.retries = urllib3.Retry(total=1, connect=1, read=1, redirect=0, status=0, other=0)
    try:
        if settings.in_cluster:
            # with a Configuration to fill, the loader also installs the hook that re-reads the
            # projected service-account token before it expires
            k8s_config.load_incluster_config(client_configuration=configuration)
            api = k8s.ApiClient(configuration)
        else:
            # persist_config=False: a daemon must not rewrite the user's kubeconfig when a token refreshes
            api = k8s_config.new_client_from_config(config_file=settings.kubeconfig, context=settings.context,
                                                    persist_config=False, client_configuration=configuration)
    except (k8s_config.ConfigException, OSError, ValueError, KeyError, TypeError) as e:
        source = "the in-cluster service account" if settings.in_cluster else (
            f"kubeconfig {settings.kubeconfig or '(default)'} context {settings.context or '(current)'}")
        raise ProviderError(ErrorKind.INVALID, Redactor(configuration)(f"cannot load {source}: {e}")) from None
    return api


class KubernetesProvider:
    """One member cluster reached through its Kubernetes API (see the module docstring for the design)."""

    def __init__(self, name: str, settings: KubeSettings, *, api_client: k8s.ApiClient | None = None,
                 clock: Clock | None = None, pools: Sequence[PoolInfo] = (),
                 watch_timeout_s: float = 60.0) -> None:
        self.name = name
        self.settings = settings
        self._owns_client = api_client is None
        self._api = api_client if api_client is not None else build_api_client(settings)
        self._clock: Clock = clock or _WallClock()
        self._pools = {p.name: p for p in pools}
        self._core = k8s.CoreV1Api(self._api)
        self._batch = k8s.BatchV1Api(self._api)
        self._redact = Redactor(self._api.configuration)
        self._host = safe_host(self._api.configuration)
        self._timeout = (settings.request_timeout_s, settings.request_timeout_s)
        self._sink = ErrorSink()
        self._namespaces: set[str] = set()  # namespaces known to exist, so dispatch creates each once
        self._lock = threading.Lock()
        self._started = False
        self._probe_failed = False
        # the cache threads must not reference the provider, so a forgotten provider still stops them
        pools_by_name, timeout_s = self._pools, settings.request_timeout_s
        classify_async = _async_classifier(name, self._redact, self._host, self._clock)
        list_lock = threading.Lock()

        def cache(what: str, call: Callable[..., Any], extract: Callable[[Json], T],
                  **selectors: str) -> Reflector[T]:
            return Reflector(what, call, extract, classify=classify_async, sink=self._sink,
                             request_timeout_s=timeout_s, watch_timeout_s=watch_timeout_s, cluster=name,
                             list_lock=list_lock, **selectors)

        self.nodes_cache = cache("nodes", self._core.list_node,
                                 lambda o: node_record(o, settings, pools_by_name))
        self.pods_cache = cache("unfinished pods", self._core.list_pod_for_all_namespaces,
                                lambda o: pod_record(o, settings), field_selector=UNFINISHED_PODS)
        # Spillover's pods in every phase: a finished job still tells where it ran and why it failed
        self.job_pods_cache = cache("Spillover pods", self._core.list_pod_for_all_namespaces,
                                    lambda o: pod_record(o, settings), label_selector=OURS)
        self.jobs_cache = cache("Spillover Jobs", self._batch.list_job_for_all_namespaces,
                                lambda o: job_record(o, settings), label_selector=OURS)
        self._caches: tuple[Reflector[Any], ...] = (self.nodes_cache, self.pods_cache, self.job_pods_cache,
                                                   self.jobs_cache)
        self._finalizer = weakref.finalize(self, _shutdown, self._caches, self._api if self._owns_client else None)

    # ---- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the watch threads (and close the client if this provider built it)."""
        self._finalizer()

    def __enter__(self) -> KubernetesProvider:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- the contract --------------------------------------------------------------------------

    def observe(self) -> ClusterState:
        if not self._finalizer.alive:
            raise ProviderError(ErrorKind.INVALID, "the provider was closed", cluster=self.name)
        deadline = time.monotonic() + max(3 * self.settings.request_timeout_s, 10.0)
        with self._lock:
            first_time = not self._started
            if first_time:
                self._started = True
                for cache in self._caches:
                    cache.start()
        try:
            if not first_time:
                self._probe()
            self._await_caches(deadline)
        except ProviderError as e:
            # the caches' own reports of this failure would only repeat it, late, after recovery
            self._sink.discard(e.kind)
            raise
        return self._state()

    def dispatch(self, request: DispatchRequest) -> None:
        known = self._cached_job(request.job_id)
        if known is not None:
            self._check_same_dispatch(request, known.namespace, known.name, known.request_id, known.deleting)
            log.info("%s: job %s already exists as Job %s/%s; adopting it", self.name, request.job_id,
                     known.namespace, known.name)
            return
        namespace = self.settings.namespace_for(request.spec.queue)
        body = job_manifest(request, namespace, self.settings, self._products)
        where = f"{namespace}/{request.job_id}"

        def create(missing_ok: bool) -> None:
            self._ensure_namespace(namespace, request.request_id)
            self._call(f"create Job {where}", lambda: self._batch.create_namespaced_job(
                namespace, body, _request_timeout=self._timeout), request_id=request.request_id,
                conflict_ok=True, missing_ok=missing_ok)

        try:
            try:
                create(missing_ok=True)
            except _Missing:
                # the namespace was deleted since this provider created it: create it again, once
                self._namespaces.discard(namespace)
                create(missing_ok=False)
        except _Conflict:
            existing = self._call(f"read Job {where}", lambda: self._get_json(
                self._batch.read_namespaced_job, request.job_id, namespace), request_id=request.request_id)
            meta = existing.get("metadata") or {}
            labels = meta.get("labels") or {}
            if labels.get(JOB_ID_LABEL) != request.job_id:
                raise ProviderError(ErrorKind.INVALID, f"a Job named {where} that Spillover did not create "
                                    "already exists; rename or delete it", cluster=self.name,
                                    at=self._clock.now(), request_id=request.request_id) from None
            self._check_same_dispatch(request, namespace, request.job_id,
                                      str((meta.get("annotations") or {}).get(REQUEST_ID_ANNOTATION) or ""),
                                      bool(meta.get("deletionTimestamp")))
            log.info("%s: Job %s already exists; adopting it (request %s)", self.name, where, request.request_id)
            return
        log.info("%s: created Job %s (%d x %d %s GPUs%s, request %s)", self.name, where, request.spec.nodes,
                 request.spec.gpus, request.gpu_type or "any", f", pool {request.pool}" if request.pool else "",
                 request.request_id)

    def _check_same_dispatch(self, request: DispatchRequest, namespace: str, name: str, request_id: str,
                             deleting: bool) -> None:
        """A Job left by an earlier attempt (interrupted, requeued) holds the name until it is removed: adopting
        it would bring back its old outcome, so the dispatch waits (TRANSIENT) instead."""
        if request_id and request_id != request.request_id or deleting:
            raise ProviderError(ErrorKind.TRANSIENT, f"Job {namespace}/{name} from an earlier attempt "
                                f"({request_id or 'unknown'}) is still there; dispatching once it is removed",
                                cluster=self.name, at=self._clock.now(), request_id=request.request_id)

    def cancel(self, job_id: str, request_id: str) -> None:
        for job in self._find_jobs(job_id, request_id):
            where = f"{job.namespace}/{job.name}"
            try:
                self._call(f"delete Job {where}", lambda: self._batch.delete_namespaced_job(
                    job.name, job.namespace, propagation_policy="Background", _request_timeout=self._timeout),
                    request_id=request_id, missing_ok=True)
            except _Missing:
                continue
            log.info("%s: deleted Job %s with its pods (request %s)", self.name, where, request_id)

    def job_status(self, job_id: str) -> JobStatus | None:
        jobs = self._find_jobs(job_id, None)
        if not jobs:
            return None
        # one id is one Job; if a stray copy exists, the unfinished one is the one that matters
        job = sorted(jobs, key=lambda j: (j.outcome is None, j.start_time or 0.0))[-1]
        data = self._call(f"list pods of Job {job.namespace}/{job.name}", lambda: self._get_json(
            self._core.list_namespaced_pod, job.namespace, label_selector=f"{JOB_ID_LABEL}={job_id}"))
        pods = [pod_record(p, self.settings) for p in data.get("items") or ()]
        nodes = {n.name: n for n in self.nodes_cache.items()} if self._started else {}
        return job_status(job, pods, lambda n: nodes[n].pool if n in nodes else None)

    def scale_pool(self, pool: str, desired_nodes: int, request_id: str) -> None:
        raise ProviderError(ErrorKind.INVALID, f"cluster {self.name} has no node-pool API configured; cannot "
                            f"scale pool {pool!r}", cluster=self.name, pool=pool, at=self._clock.now(),
                            request_id=request_id)

    def poll_errors(self) -> list[ProviderError]:
        return self._sink.drain()

    # ---- observation -------------------------------------------------------------------------

    def _probe(self) -> None:
        """One cheap authenticated read: proves the API answers now, whatever the watches believe."""
        try:
            self._call("probe (list nodes, limit 1)", lambda: self._drain(self._core.list_node(
                limit=1, _preload_content=False, _request_timeout=self._timeout)))
        except ProviderError:
            self._probe_failed = True
            raise
        if self._probe_failed:
            # the API was away: an open watch may be stuck on a connection it no longer serves
            self._probe_failed = False
            for cache in self._caches:
                cache.kick()

    def _await_caches(self, deadline: float) -> None:
        """Wait for every cache's first list; a cache that cannot list, or has failed to watch for long,
        makes the observation fail (a briefly failing watch only makes it a little stale)."""
        stale_after = max(3 * self.settings.request_timeout_s, 30.0)

        def usable(c: Reflector[Any]) -> bool:
            return c.synced and (c.healthy or c.failing_for(time.monotonic()) < stale_after)

        for cache in self._caches:
            if usable(cache):
                continue
            if cache.error is not None:  # backing off after a failure: try again now, the caller is waiting
                seen = cache.outcomes()
                cache.kick()
                cache.wait_outcome_after(seen, deadline)
            cache.wait_until(lambda c=cache: c.synced or c.error is not None, deadline)
            if not usable(cache):
                break  # this observation has failed: waiting on the other caches would only delay saying so
        failed = [c for c in self._caches if not usable(c)]
        worst = first(c.error for c in failed if c.error is not None)
        if worst is not None:
            raise ProviderError(worst.kind, worst.message, cluster=self.name, at=self._clock.now())
        if failed:
            raise ProviderError(ErrorKind.UNREACHABLE, f"the first list of {', '.join(c.what for c in failed)} "
                                "did not finish in time", cluster=self.name, at=self._clock.now())

    def _state(self) -> ClusterState:
        nodes = self.nodes_cache.items()
        # the one loop over every pod in the cluster: kept to plain tuples and dict lookups
        used: dict[str, tuple[float, float, float]] = {}
        jobs_on: dict[str, set[str]] = {}
        zero = (0.0, 0.0, 0.0)
        for pod in self.pods_cache.items():
            node = pod.node
            if node is None or pod.phase in TERMINAL_POD_PHASES:
                continue
            g, c, m = used.get(node, zero)
            used[node] = (g + pod.gpus, c + pod.cpu, m + pod.memory_gib)
            if pod.job_id:
                jobs_on.setdefault(node, set()).add(pod.job_id)
        infos: list[NodeInfo] = []
        for n in nodes:
            if not n.usable or not n.gpu_type or n.gpus <= 0:
                continue
            g, c, m = used.get(n.name, zero)
            infos.append(NodeInfo(
                name=n.name, gpu_type=n.gpu_type, gpus=n.gpus, cpu=n.cpu, memory_gib=n.memory_gib,
                free_gpus=max(0, n.gpus - int(round(g))), free_cpu=max(0.0, n.cpu - c),
                free_memory_gib=max(0.0, n.memory_gib - m), ready=True, pool=n.pool,
                jobs=len(jobs_on.get(n.name, ()))))
        infos.sort(key=lambda i: i.name)
        pool_of = {n.name: n.pool for n in nodes}
        pods_of: dict[tuple[str, str], list[PodRecord]] = defaultdict(list)
        for pod in self.job_pods_cache.items():
            if pod.job_id:
                pods_of[(pod.namespace, pod.job_id)].append(pod)
        statuses: dict[str, JobStatus] = {}
        for job in self.jobs_cache.items():
            status = job_status(job, pods_of.get((job.namespace, job.job_id), ()), pool_of.get)
            current = statuses.get(job.job_id)
            # a stray second copy must not hide the live one
            if current is None or (current.phase.value in ("succeeded", "failed")
                                   and status.phase.value not in ("succeeded", "failed")):
                statuses[job.job_id] = status
        return ClusterState(cluster=self.name, observed_at=self._clock.now(), nodes=tuple(infos),
                            pools=self._pool_states(nodes), jobs=statuses)

    def _pool_states(self, nodes: list[NodeRecord]) -> tuple[PoolState, ...]:
        out = []
        for p in self._pools.values():
            mine = [n for n in nodes if n.pool == p.name]
            # without a node-pool API the nodes that exist are the best knowledge of the desired size
            out.append(PoolState(name=p.name, instance_type=p.instance_type, gpu_type=p.gpu_type,
                                 gpus_per_node=p.gpus_per_node, desired_nodes=len(mine), nodes=len(mine),
                                 ready_nodes=sum(1 for n in mine if n.ready), min_nodes=p.min_nodes,
                                 max_nodes=p.max_nodes))
        return tuple(out)

    # ---- helpers -------------------------------------------------------------------------------

    def _products(self, gpu_type: str) -> list[str]:
        """The product label values of this cluster's nodes of a GPU type (none if it has no such node)."""
        nodes = self.nodes_cache.items() if self._started else ()
        found = sorted({n.gpu_product for n in nodes if n.gpu_type == gpu_type and n.gpu_product})
        return found

    def _cached_job(self, job_id: str) -> JobRecord | None:
        if not self._started:
            return None
        return next((j for j in self.jobs_cache.items() if j.job_id == job_id), None)

    def _find_jobs(self, job_id: str, request_id: str | None) -> list[JobRecord]:
        """Spillover's Jobs carrying this id, read fresh from the API (the cache may lag a dispatch)."""
        data = self._call(f"find Job {job_id}", lambda: self._get_json(
            self._batch.list_job_for_all_namespaces, label_selector=f"{JOB_ID_LABEL}={job_id}"),
            request_id=request_id)
        return [job_record(j, self.settings) for j in data.get("items") or ()]

    def _ensure_namespace(self, namespace: str, request_id: str) -> None:
        if namespace in self._namespaces:
            return
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {MANAGED_BY: MANAGER}}}
        try:
            self._call(f"create namespace {namespace}", lambda: self._core.create_namespace(
                body, _request_timeout=self._timeout), request_id=request_id, conflict_ok=True)
            log.info("%s: created namespace %s", self.name, namespace)
        except _Conflict:
            pass  # it exists: all we needed
        self._namespaces.add(namespace)

    def _get_json(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Json:
        resp = method(*args, **kwargs, _preload_content=False, _request_timeout=self._timeout)
        return json.loads(self._drain(resp))

    @staticmethod
    def _drain(resp: Any) -> bytes:
        try:
            return resp.data
        finally:
            resp.release_conn()

    def _call(self, action: str, fn: Callable[[], T], *, request_id: str | None = None,
              conflict_ok: bool = False, missing_ok: bool = False) -> T:
        """Run one API call, classified; THROTTLED and TRANSIENT get one quick second try (the loop retries
        next cycle anyway, so nothing here waits long)."""

        def once() -> T:
            try:
                return fn()
            except ApiException as e:
                if conflict_ok and e.status == 409:
                    raise _Conflict() from None
                if missing_ok and e.status == 404:
                    raise _Missing() from None
                raise self._error(e, action, request_id) from None
            except Exception as e:  # noqa: BLE001 - classified, with the cause kept out of the message
                raise self._error(e, action, request_id) from None

        retrying = Retrying(stop=stop_after_attempt(2), wait=wait_fixed(0.2), reraise=True,
                            retry=retry_if_exception(lambda e: isinstance(e, ProviderError) and e.kind in RETRYABLE))
        try:
            return retrying(once)
        except ProviderError as e:
            log.warning("%s", e)
            raise

    def _error(self, exc: BaseException, action: str, request_id: str | None) -> ProviderError:
        err = classify(exc, action=action, cluster=self.name, redact=self._redact, host=self._host,
                       at=self._clock.now(), request_id=request_id)
        if isinstance(exc, ApiException) and exc.status == 429:
            retry_after = (status_body(exc).get("details") or {}).get("retryAfterSeconds")
            if retry_after:
                err.message = f"{err.message} (retry after {retry_after}s)"
        return err


class _Conflict(Exception):
    """409 AlreadyExists where the caller decides what it means."""


class _Missing(Exception):
    """404 where absence is an answer, not a failure."""


def _async_classifier(cluster: str, redact: Redactor, host: str,
                      clock: Clock) -> Callable[[BaseException, str], ProviderError]:
    def classify_async(exc: BaseException, action: str) -> ProviderError:
        return classify(exc, action=action, cluster=cluster, redact=redact, host=host, at=clock.now())

    return classify_async


def _shutdown(caches: tuple[Reflector[Any], ...], api: k8s.ApiClient | None) -> None:
    for cache in caches:
        cache.request_stop()  # all of them first, so their waits overlap
    deadline = time.monotonic() + 2.0
    for cache in caches:
        cache.stop(timeout=deadline - time.monotonic())
    if api is not None:
        api.close()
