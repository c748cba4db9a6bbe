"""A benchmark app: CPU-bound or sleeping requests, and the concurrency it saw.

    /              "ok"
    /work?ms=N     burn N ms of this thread's CPU time, then answer
    /sleep?ms=N    sleep N ms, then answer
    /stats         {"inflight", "max_inflight", "served"} (not counted themselves)
    /reset         zero max_inflight and served

Threaded (one thread per connection) and quiet (no access log). Under the GIL an instance
uses at most one core, and concurrent CPU requests share it (processor sharing), like an
app on a one-vCPU machine. ``max_inflight`` shows whether a proxy held the instance to its
``hard_limit``. ``BENCH_CPUS=1`` (or ``0,1``) pins the process; ``BENCH_RT=N`` runs it
``SCHED_FIFO`` at priority N. Standard library only; listens on 127.0.0.1:$PORT.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_lock = threading.Lock()
_state = {"inflight": 0, "max_inflight": 0, "served": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "roost-bench"
    # head and body are two writes: without TCP_NODELAY the body waits for the peer's
    # delayed ACK (~40 ms) on every keep-alive response
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/stats":
            with _lock:
                self._send(200, json.dumps(_state).encode())
            return
        if url.path == "/reset":
            with _lock:
                _state["max_inflight"] = _state["served"] = 0
            self._send(200, b"reset\n")
            return
        with _lock:
            _state["inflight"] += 1
            _state["max_inflight"] = max(_state["max_inflight"], _state["inflight"])
        try:
            ms = int(parse_qs(url.query).get("ms", ["0"])[0])
            if url.path == "/work":
                deadline = time.thread_time() + ms / 1000
                while time.thread_time() < deadline:
                    pass
            elif url.path == "/sleep":
                time.sleep(ms / 1000)
            self._send(200, b"ok\n")
        finally:
            with _lock:
                _state["inflight"] -= 1
                _state["served"] += 1

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main() -> None:
    cpus = os.environ.get("BENCH_CPUS")
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    rt = os.environ.get("BENCH_RT")
    if rt:  # real-time priority (its threads inherit it): load on its CPU cannot delay it
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(rt)))
    server = Server(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Handler)

    def _stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
