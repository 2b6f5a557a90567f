"""The HTTP plumbing the tests' local peers share (Kubernetes API server, GKE, AKS): a threaded server on
127.0.0.1 that can drop its kept-alive connections as a peer that went away would, and a handler that hands each
request to its peer's `_handle` and turns a peer bug into a 500 whose traceback the peer keeps."""

from __future__ import annotations

import json
import socket
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class PeerServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[PeerHandler], peer: Any,
                 lock: Any | None = None) -> None:
        self.peer = peer
        self.closed = False
        self.connections: set[socket.socket] = set()
        self.connections_lock = lock if lock is not None else threading.Lock()
        super().__init__(address, handler)

    def drop_connections(self) -> None:
        # kept-alive connections would otherwise still be answered by a peer that has gone away
        with self.connections_lock:
            conns = list(self.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class PeerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: PeerServer

    def setup(self) -> None:
        super().setup()
        # headers and body leave in two writes; without this, Nagle and delayed ACKs add 40 ms to each answer
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def handle_one_request(self) -> None:
        if self.server.closed:
            self.close_connection = True
            return
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def internal_error_body(self) -> Any:
        """What a 500 from a bug in the peer says, in the API's own error format."""
        return {"error": "internal error in the peer"}

    def _dispatch(self) -> None:
        try:
            self.server.peer._handle(self)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception:  # a peer bug: answer 500 and keep the traceback where tests look for it
            self.server.peer._record_error(traceback.format_exc())
            self.close_connection = True
            try:
                self.send_json(500, self.internal_error_body())
            except OSError:
                pass

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _dispatch

    def send_body(self, code: int, body: bytes, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send_body(code, json.dumps(obj, separators=(",", ":")).encode(), headers=headers)


class Peer:
    """A peer's lifecycle: serve on host:port in a thread, stop answering (connection refused on the same port)
    while keeping the state, start again. Subclasses set `handler` and `thread_name`."""

    handler: type[PeerHandler]
    thread_name = "peer"

    def _init_server(self, host: str, port: int, lock: Any | None = None) -> None:
        self.host = host
        self._port = port
        self._server_lock = lock
        self._httpd: PeerServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    def start(self) -> Any:
        if self._httpd is not None:
            return self
        httpd = PeerServer((self.host, self._port), self.handler, self, lock=self._server_lock)
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.thread_name}-{self._port}", daemon=True)
        self._thread.start()
        self._started()
        return self

    def _started(self) -> None:
        """What else runs once the server does."""

    def _closing(self, httpd: PeerServer) -> None:
        httpd.closed = True

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._closing(httpd)
        httpd.shutdown()
        httpd.server_close()
        httpd.drop_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()
