#!/usr/bin/env python3
"""A stand-in for HSS's batch-scan endpoint: records every request, answers 200.

Used by deploy/local-cluster/run.sh and the compose overlay compose/fake-hss.yml.

  POST /v5/{project_id}/image/batch-scan  -> 200 {}, request appended to --record (JSON lines)
  GET  /requests                           -> every recorded request, as a JSON array
  GET  /healthz                            -> 200

It checks the shape a real HSS would insist on (JSON body, an SDK-HMAC-SHA256
Authorization header, X-Sdk-Date) and answers 400 otherwise, so a bridge that
sends something malformed is seen failing, not silently recorded. It does not
verify signatures: the HSS client's unit tests do that against known vectors.
Only the standard library; listens where it is told (127.0.0.1 by default).
"""

import argparse
import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BATCH_SCAN_PATH = re.compile(r"^/v5/(?P<project_id>[^/]+)/image/batch-scan$")


class Recorder:
    """Keeps requests in memory and, when given a path, as JSON lines on disk."""

    def __init__(self, path):
        self._lock = threading.Lock()
        self._requests = []
        self._path = path

    def add(self, entry):
        with self._lock:
            self._requests.append(entry)
            if self._path:
                with open(self._path, "a", encoding="utf-8") as out:
                    out.write(json.dumps(entry, sort_keys=True) + "\n")

    def all(self):
        with self._lock:
            return list(self._requests)


def make_handler(recorder):
    class Handler(BaseHTTPRequestHandler):
        server_version = "fake-hss/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            sys.stderr.write("fake-hss: " + (fmt % args) + "\n")

        def _answer(self, status, payload, request_id=None):
            body = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if request_id:
                self.send_header("X-Request-Id", request_id)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/healthz":
                self._answer(200, {"status": "ok"})
            elif self.path == "/requests":
                self._answer(200, recorder.all())
            else:
                self._answer(404, {"error_code": "HSS.0404", "error_msg": "not found"})

        def do_POST(self):
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            match = BATCH_SCAN_PATH.match(url.path)
            if not match:
                self._answer(404, {"error_code": "HSS.0404", "error_msg": "not found"})
                return
            request_id = uuid.uuid4().hex
            problems = []
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                problems.append("Content-Type is not application/json")
            if not (self.headers.get("Authorization") or "").startswith("SDK-HMAC-SHA256 "):
                problems.append("Authorization is not SDK-HMAC-SHA256")
            if not self.headers.get("X-Sdk-Date"):
                problems.append("X-Sdk-Date is missing")
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                body = None
                problems.append("body is not JSON")
            entry = {
                "received_at": time.time(),
                "request_id": request_id,
                "project_id": match.group("project_id"),
                "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                "headers": {
                    name: self.headers.get(name)
                    for name in ("Content-Type", "X-Sdk-Date", "X-Project-Id", "region")
                    if self.headers.get(name) is not None
                },
                "authorization_scheme": (self.headers.get("Authorization") or "").split(" ")[0],
                "body": body,
                "problems": problems,
            }
            recorder.add(entry)
            if problems:
                self._answer(
                    400,
                    {"error_code": "HSS.1001", "error_msg": "; ".join(problems)},
                    request_id,
                )
            else:
                self._answer(200, {}, request_id)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--record", help="append each request here as a JSON line")
    parser.add_argument("--port-file", help="write the port actually bound here")
    args = parser.parse_args()

    server = ThreadingHTTPServer((args.host, args.port), make_handler(Recorder(args.record)))
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file, "w", encoding="utf-8") as out:
            out.write(f"{port}\n")
    sys.stderr.write(f"fake-hss: listening on {args.host}:{port}\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
