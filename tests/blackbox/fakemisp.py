"""A fake MISP REST API for the black-box tests, shaped after what MISP answers (spec
upstream.md §6.6, §6.7): `GET /servers/getVersion`, `POST /sightings/add`,
`POST /attributes/restSearch`. It records every request (method, path, headers, JSON body) so
that the tests can assert exactly what the bus sent."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

AUTH_FAILED = {
    "name": "Authentication failed. Please make sure you pass the API key of an API enabled "
            "user along in the Authorization header.",
    "message": "Authentication failed. Please make sure you pass the API key of an API enabled "
               "user along in the Authorization header.",
    "url": "/sightings/add",
}


class FakeMisp:
    def __init__(self, port: int, key: str = "MISP_API_KEY", host: str = "127.0.0.1",
                 tls: tuple[str, str] | None = None):
        """tls: (certificate, key) PEM files to serve HTTPS with."""
        self.key = key
        self.requests: list[dict] = []
        self.known: set[str] = set()  # attribute uuids that sightings may name
        self.attributes: list[dict] = []  # what restSearch finds (paged by limit/page)
        self.failures: list[int] = []  # statuses to answer the next calls with, first to last
        self.search_error: dict | None = None  # a MISP error answer for restSearch
        # restSearch answers wait for this (so a test can connect its app first)
        self.search_gate = threading.Event()
        self.search_gate.set()
        self.cond = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status: int, document):
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                record = {"method": self.command, "path": self.path,
                          "headers": {k.lower(): v for k, v in self.headers.items()},
                          "raw": raw, "json": None}
                try:
                    record["json"] = json.loads(raw) if raw else None
                except ValueError:
                    pass
                with fake.cond:
                    fake.requests.append(record)
                    failure = fake.failures.pop(0) if fake.failures else None
                    fake.cond.notify_all()
                if failure is not None:
                    return self._answer(failure, {"name": "Internal error", "message": "busy"})
                if self.headers.get("Authorization") != fake.key:
                    return self._answer(403, AUTH_FAILED)
                if self.command == "GET" and self.path == "/servers/getVersion":
                    return self._answer(200, {"version": "2.4.170", "perm_sync": False})
                if self.command == "POST" and self.path == "/sightings/add":
                    uuid = (record["json"] or {}).get("id")
                    if uuid in fake.known:
                        return self._answer(200, {"Sighting": {"id": "1", "attribute_id": "15",
                                                               "uuid": uuid, "type": "0"}})
                    return self._answer(403, {"saved": False, "name": "Could not add the Sighting.",
                                              "message": "Could not add the Sighting.",
                                              "url": "/sightings/add",
                                              "errors": "No valid attributes found."})
                if self.command == "POST" and self.path == "/attributes/restSearch":
                    fake.search_gate.wait(30)
                    if fake.search_error is not None:
                        return self._answer(404, fake.search_error)
                    query = record["json"] or {}
                    # Only `type` is applied here, so that the bus's own filtering of the
                    # results (by creator org, tags) is visible.
                    found = [a for a in fake.attributes
                             if "type" not in query or a["type"] == query["type"]]
                    limit, page = query.get("limit"), query.get("page", 1)
                    if limit:
                        found = found[(page - 1) * limit:page * limit]
                    return self._answer(200, {"response": {"Attribute": found}})
                return self._answer(404, {"name": "Not Found", "message": "Not Found",
                                          "url": self.path})

            do_GET = _handle
            do_POST = _handle

        self.server = ThreadingHTTPServer((host, port), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://{host}:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def calls(self, path: str) -> list[dict]:
        with self.cond:
            return [r for r in self.requests if r["path"] == path]

    def wait_for(self, predicate, timeout: float = 15) -> list[dict]:
        """Waits until predicate(requests) is true; returns the requests."""
        with self.cond:
            ok = self.cond.wait_for(lambda: predicate(self.requests), timeout)
            assert ok, f"the fake MISP did not see what was expected; it saw {self.requests}"
            return list(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
