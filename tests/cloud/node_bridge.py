"""What a cloud does between its node-pool API and Kubernetes, for tests: when a pool's size grows, nodes labelled
with the pool's name join the cluster's API server after a boot delay; when it shrinks, nodes leave."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kube.apiserver import FakeKube


class NodeBridge:
    """Keeps the nodes of one pool in `kube` equal to `size()`, each new one after `boot_s`; `stalled()` true
    means instances cannot launch (a stockout), so no node joins."""

    def __init__(self, kube: FakeKube, pool: str, size: Callable[[], int], *, pool_label: str, gpus: int = 8,
                 gpu_product: str = "NVIDIA-A100-SXM4-80GB", boot_s: float = 0.5,
                 stalled: Callable[[], bool] = lambda: False, on_stall: Callable[[], None] = lambda: None,
                 cpu: int = 96, memory_gib: int = 1152) -> None:
        self.kube, self.pool, self._size, self._stalled, self._on_stall = kube, pool, size, stalled, on_stall
        self.pool_label, self.gpus, self.gpu_product, self.boot_s = pool_label, gpus, gpu_product, boot_s
        self.cpu, self.memory_gib = cpu, memory_gib
        self.max_seen = 0
        self._booting: list[float] = []
        self._seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def nodes(self) -> list[str]:
        return sorted(n["metadata"]["name"] for n in self.kube.objects("nodes")
                      if (n["metadata"].get("labels") or {}).get(self.pool_label) == self.pool)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the API server may be stopped by the test; try again
                continue

    def _step(self) -> None:
        want = self._size()
        self.max_seen = max(self.max_seen, want)
        have = self.nodes()
        now = time.monotonic()
        if self._stalled():
            self._booting.clear()
            if len(have) < want:
                self._on_stall()  # e.g. the cloud reports the failed launches
        elif len(have) + len(self._booting) < want:
            self._booting += [now + self.boot_s] * (want - len(have) - len(self._booting))
        while self._booting and self._booting[0] <= now and len(have) < want:
            self._booting.pop(0)
            self._seq += 1
            name = f"{self.pool}-{self._seq:03d}"
            self.kube.add_node(name, gpus=self.gpus, gpu_product=self.gpu_product, cpu=self.cpu,
                               memory_gib=self.memory_gib, labels={self.pool_label: self.pool})
            have.append(name)
        if len(have) > want:
            self._booting.clear()
            # the cloud picks which instances go, busy or not: the oldest first, as an Auto Scaling group may
            for name in have[: len(have) - want]:
                self.kube.remove_node(name)
        if want < len(have) + len(self._booting):
            self._booting = self._booting[: max(0, want - len(have))]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
