"""An informer-style cache of one Kubernetes collection: a background thread lists it once, then follows
its watch from the last resourceVersion, listing again when the API answers 410 Gone.

Responses are read raw (`_preload_content=False`) and parsed with `json`; each object is reduced to a slim
record on arrival, so the client's model deserialization never runs and memory holds only what is read.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from kubernetes.client.exceptions import ApiException

from spillover.providers.contract import ErrorKind, ProviderError
from spillover.providers.kube_errors import Expired, status_error
from spillover.providers.kube_objects import Json, object_key

log = logging.getLogger(__name__)

R = TypeVar("R")
ListCall = Callable[..., Any]  # an API list method such as CoreV1Api.list_pod_for_all_namespaces
Classify = Callable[[BaseException, str], ProviderError]

PAGE_SIZE = 500  # as client-go's reflector: bounded responses, one consistent snapshot across pages
MAX_BACKOFF_S = 30.0


class ErrorSink:
    """Asynchronous errors waiting for `poll_errors()`, shared by the provider and its caches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: list[ProviderError] = []

    def add(self, error: ProviderError) -> None:
        with self._lock:
            self._errors.append(error)

    def drain(self) -> list[ProviderError]:
        with self._lock:
            out, self._errors = self._errors, []
        return out

    def discard(self, kind: ErrorKind) -> None:
        """Forget pending errors of one kind (the caller reported that kind synchronously already)."""
        with self._lock:
            self._errors = [e for e in self._errors if e.kind != kind]


class Reflector(Generic[R]):
    """One collection (e.g. all pods not yet finished) kept current in memory as records."""

    def __init__(self, what: str, call: ListCall, extract: Callable[[Json], R], *, classify: Classify,
                 sink: ErrorSink, request_timeout_s: float, watch_timeout_s: float = 60.0,
                 label_selector: str | None = None, field_selector: str | None = None, cluster: str = "",
                 list_lock: threading.Lock | None = None) -> None:
        self.what = what
        # caches of one cluster list one at a time: parsing is CPU-bound under the interpreter lock, so
        # parallel lists only interleave (and measured slower in all than the same lists in a row), and
        # after an outage the relists do not all hit the API at once
        self._list_lock = list_lock or threading.Lock()
        self._where = f"{cluster}: {what}" if cluster else what
        self._call = call
        self._extract = extract
        self._classify = classify
        self._sink = sink
        self._request_timeout_s = request_timeout_s
        self._watch_timeout_s = watch_timeout_s
        self._selectors: dict[str, str] = {}
        if label_selector:
            self._selectors["label_selector"] = label_selector
        if field_selector:
            self._selectors["field_selector"] = field_selector
        self._items: dict[str, R] = {}
        self._rv: str | None = None
        self._cond = threading.Condition()
        self._synced = False  # the store holds one complete list (possibly followed by watched changes)
        self._healthy = False  # the last list or watch request was answered
        self._error: ProviderError | None = None
        self._failing_since: float | None = None
        self._reported = False  # the current failure streak was handed to the sink
        self._outcomes = 0  # bumped on every success or failure, so waiters see a fresh attempt
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._resp: Any = None
        self._interrupted = False
        self._thread: threading.Thread | None = None
        self.lists = 0  # complete lists so far (the first one included)

    # ---- control -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"kube-cache {self._where}", daemon=True)
            self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to end without waiting for it (see `stop`)."""
        self._stop.set()

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread; one blocked reading a list answer ends at the latest when its read times out."""
        self._stop.set()
        self.kick()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(0.0, timeout))

    def kick(self) -> None:
        """Reconnect now: cut the open watch (it may hang on a connection the API forgot) and skip a backoff."""
        self._wake.set()
        resp = self._resp
        if resp is not None:
            self._interrupted = True
            try:
                resp.shutdown()
            except Exception:  # noqa: BLE001 - already closed or released: nothing to cut
                pass

    # ---- what the provider reads ---------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._synced

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def error(self) -> ProviderError | None:
        return self._error

    def failing_for(self, now: float) -> float:
        """Seconds (monotonic `now` minus the first failure) the cache has failed in a row; 0 if healthy."""
        since = self._failing_since
        return 0.0 if since is None else now - since

    def outcomes(self) -> int:
        return self._outcomes

    def wait_until(self, ready: Callable[[], bool], deadline: float) -> bool:
        """Wait until `ready()` holds (checked after every attempt), or the deadline (monotonic) passed."""
        with self._cond:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def wait_outcome_after(self, seen: int, deadline: float) -> bool:
        """Wait until an attempt after `seen` ended, or the deadline (monotonic) passed."""
        with self._cond:
            while self._outcomes <= seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def items(self) -> list[R]:
        with self._cond:
            return list(self._items.values())

    # ---- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            self._interrupted = False
            action = f"list {self.what}" if self._rv is None else f"watch {self.what}"
            began = time.monotonic()
            try:
                if self._rv is None:
                    with self._list_lock:
                        if self._stop.is_set():
                            break
                        self._list()
                events = self._watch()
                backoff = 0.0
                if events == 0 and time.monotonic() - began < 0.5:
                    self._wake.wait(0.5)  # a server that ends watches at once must not make us spin
            except Expired as exc:
                if self._stop.is_set():
                    break
                # routine for a cache, but it means a full list: reported once, so it shows if it repeats
                self._rv = None
                error = self._classify(exc, f"watch {self.what}")
                log.info("%s", error)
                self._sink.add(error)
            except Exception as exc:  # noqa: BLE001 - every failure is classified and retried
                if self._stop.is_set():
                    break
                if self._interrupted:  # our own kick, not the API's fault
                    continue
                self._fail(self._classify(exc, action))
                backoff = min(MAX_BACKOFF_S, max(0.5, backoff * 2))
                self._wake.wait(backoff * random.uniform(0.8, 1.2))

    def _succeeded(self) -> None:
        with self._cond:
            recovered = self._failing_since is not None
            self._healthy, self._error, self._failing_since, self._reported = True, None, None, False
            self._outcomes += 1
            self._cond.notify_all()
        if recovered:
            log.info("%s: the API answers again", self._where)

    def _fail(self, error: ProviderError) -> None:
        with self._cond:
            self._healthy, self._error = False, error
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            first = not self._reported
            self._reported = True
            self._outcomes += 1
            self._cond.notify_all()
        if first:
            log.warning("%s", error)
            self._sink.add(error)

    def _timeouts(self, read_s: float) -> tuple[float, float]:
        return (self._request_timeout_s, read_s)

    def _list(self) -> None:
        items: dict[str, R] = {}
        token: str | None = None
        restarted = False
        meta: Json = {}
        while True:
            kwargs: dict[str, Any] = dict(self._selectors, limit=PAGE_SIZE)
            if token:
                kwargs["_continue"] = token
            try:
                resp = self._call(**kwargs, _preload_content=False,
                                  _request_timeout=self._timeouts(self._request_timeout_s))
            except ApiException as e:
                if e.status == 410 and token and not restarted:
                    # the continue token outlived the snapshot it pages through: start one fresh list
                    items, token, restarted = {}, None, True
                    continue
                raise
            try:
                data = json.loads(resp.data)
            except BaseException:
                resp.close()
                raise
            finally:
                resp.release_conn()
            for obj in data.get("items") or ():
                record = self._record(obj)
                if record is not None:
                    items[object_key(obj)] = record
            meta = data.get("metadata") or {}
            token = meta.get("continue") or None
            if not token:
                break
        with self._cond:
            self._items = items
            self._rv = str(meta.get("resourceVersion") or "") or None
            self._synced = True
            self.lists += 1
        self._succeeded()

    def _record(self, obj: Json) -> R | None:
        try:
            return self._extract(obj)
        except Exception:  # noqa: BLE001 - one odd object must not stall the whole cache
            log.warning("%s: skipped %s that could not be read", self._where, object_key(obj), exc_info=True)
            return None

    def _watch(self) -> int:
        """Follow the watch until the server ends it; returns how many events arrived."""
        if self._rv is None:
            raise Expired()
        # the server ends the watch after timeout_seconds; jitter keeps many caches from reconnecting together
        server_s = max(1, int(self._watch_timeout_s * random.uniform(0.8, 1.2)))
        try:
            resp = self._call(**self._selectors, watch=True, resource_version=self._rv,
                              allow_watch_bookmarks=True, timeout_seconds=server_s, _preload_content=False,
                              _request_timeout=self._timeouts(server_s + self._request_timeout_s))
        except ApiException as e:
            if e.status == 410:  # some servers refuse an expired version outright instead of in the stream
                raise Expired() from None
            raise
        self._resp = resp
        events = 0
        clean = False
        try:
            if self._stop.is_set() or self._wake.is_set():
                return 0  # kicked while the request was on its way: reconnect with fresh intent
            self._succeeded()
            for line in _lines(resp):
                self._apply(json.loads(line))
                events += 1
            clean = True
        finally:
            self._resp = None
            if not clean:
                resp.close()  # an unread stream must not go back to the pool
            resp.release_conn()
        return events

    def _apply(self, event: Json) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Expired()
            raise status_error(obj)
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            if rv:
                self._rv = str(rv)
            return
        key = object_key(obj)
        record = self._record(obj) if kind in ("ADDED", "MODIFIED") else None
        with self._cond:
            if record is None:
                self._items.pop(key, None)
            else:
                self._items[key] = record
            if rv:
                self._rv = str(rv)


def _lines(resp: Any) -> Iterator[bytes]:
    """The newline-delimited JSON events of a watch response, as they arrive; a cut-off last line is dropped."""
    pending = b""
    for chunk in resp.stream(amt=None, decode_content=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line
