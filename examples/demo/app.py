"""Roost demo app: a tiny HTTP server run by the ``process`` driver.

    /              instance id and region
    /work?ms=N     burn N ms of CPU, then answer
    /sleep?ms=N    sleep N ms, then answer
    /inflight      this instance's number of requests in progress (this one included)

Listens on 127.0.0.1:$PORT (set by Roost). Standard library only, so it runs anywhere.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

INSTANCE = os.environ.get("ROOST_INSTANCE_ID", "unknown")
REGION = os.environ.get("ROOST_REGION", "unknown")
MAX_MS = 60_000

_lock = threading.Lock()
_inflight = 0


def _ms(query: dict[str, list[str]]) -> int:
    try:
        value = int(query.get("ms", ["0"])[0])
    except ValueError:
        return -1
    return value if 0 <= value <= MAX_MS else -1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are written separately: no 40 ms stall
    server_version = "roost-demo"

    def do_GET(self) -> None:
        global _inflight
        with _lock:
            _inflight += 1
            current = _inflight
        try:
            self._route(current)
        finally:
            with _lock:
                _inflight -= 1

    do_HEAD = do_GET

    def _route(self, current: int) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/":
            self._send(200, {"instance": INSTANCE, "region": REGION})
        elif url.path == "/inflight":
            self._send(200, {"instance": INSTANCE, "inflight": current})
        elif url.path in ("/work", "/sleep"):
            ms = _ms(query)
            if ms < 0:
                self._send(400, {"error": f"ms must be an integer 0..{MAX_MS}"})
                return
            if url.path == "/work":
                deadline = time.thread_time() + ms / 1000
                while time.thread_time() < deadline:
                    pass
            else:
                time.sleep(ms / 1000)
            self._send(200, {"instance": INSTANCE, "region": REGION, url.path[1:]: ms})
        else:
            self._send(404, {"error": "not found", "path": url.path})

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        sys.stdout.write(f"{self.address_string()} {format % args}\n")
        sys.stdout.flush()


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True

    def _stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print(f"demo instance {INSTANCE} listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()
    print(f"demo instance {INSTANCE} stopped", flush=True)


if __name__ == "__main__":
    main()
