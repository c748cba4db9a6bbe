"""Test app: ``/slow?ms=N&mark=PATH`` touches PATH, sleeps N ms, then answers; it records
the most requests it ever had in progress at once (``/max``)."""

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

lock = threading.Lock()
active = 0
most = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        global active, most
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/max":
            body = str(most).encode()
        else:
            with lock:
                active += 1
                most = max(most, active)
            try:
                if "mark" in query:
                    with open(query["mark"][0], "w") as f:
                        f.write("started")
                time.sleep(int(query.get("ms", ["0"])[0]) / 1000)
            finally:
                with lock:
                    active -= 1
            body = b"done"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
