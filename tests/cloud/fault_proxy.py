"""A reverse proxy on 127.0.0.1 in front of a local peer: forwards every request unless a fault is queued, so
tests can make any HTTP API answer 429, 500 or 403 — or stop answering — through its real client."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    match: str = ""  # only requests whose "METHOD path" (or X-Amz-Target) contains this


class FaultProxy:
    """Forwards to `target_port`; `fail_next` queues canned answers."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.faults: deque[Fault] = deque()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                what = f"{self.command} {self.path.split('?')[0]}"
                with proxy._lock:
                    proxy.requests[what] += 1
                    fault = next((f for f in proxy.faults if f.match in what), None)
                    if fault is not None:
                        proxy.faults.remove(fault)
                if fault is not None:
                    self.send_response(fault.status)
                    for k, v in fault.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(fault.body)))
                    self.end_headers()
                    self.wfile.write(fault.body)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def fail_next(self, n: int, status: int, body: dict | bytes | str = b"", headers: dict[str, str] | None = None,
                  match: str = "") -> None:
        raw = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
        with self._lock:
            for _ in range(n):
                self.faults.append(Fault(status, raw, dict(headers or {}), match))

    def count(self, fragment: str) -> int:
        with self._lock:
            return sum(n for what, n in self.requests.items() if fragment in what)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
