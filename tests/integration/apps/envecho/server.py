"""Test app: answers every GET with its environment's Roost variables and MODE as JSON."""

import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

KEYS = (
    "MODE",
    "GREETING",
    "PORT",
    "ROOST_APP_NAME",
    "ROOST_INSTANCE_ID",
    "ROOST_REGION",
    "PRIMARY_REGION",
    "ROOST_PROCESS_GROUP",
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({k: os.environ.get(k) for k in KEYS}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


print("envecho starting", flush=True)
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
