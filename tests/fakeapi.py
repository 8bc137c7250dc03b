"""A fake API server's pieces for tests that need no cluster: an ``http.server`` handler on a
port of 127.0.0.1 that the test opens itself, answering with ``answers(method, path)`` (the
preflight tests, and the least-privilege tests that run the whole catalogue against it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: (status, content type, body) for one request path (``None``: every path)
Answer = tuple[int, str, str]
Answers = Callable[[str, str], Answer]

NOT_FOUND_PAGE = ("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
                  "<body><h1>Not Found</h1><p>The requested URL was not found on this server."
                  "</p></body></html>\n")
BAD_GATEWAY_PAGE = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
                    "</body>\r\n</html>\r\n")
VERSION = {"major": "1", "minor": "34", "gitVersion": "v1.34.1", "platform": "linux/amd64"}


def status(code: int, reason: str, message: str) -> str:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": message, "reason": reason, "code": code})


def everything(code: int, ctype: str, body: str) -> Answers:
    return lambda method, path: (code, ctype, body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def answers(self, raw: bytes) -> tuple[int, str, str]:
        """(status, content type, body) for this request; ``raw``: the request's body."""
        return self.server.answers(self.command, self.path)  # type: ignore[attr-defined]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.requests.append((self.command, self.path))  # type: ignore[attr-defined]
        code, ctype, body = self.answers(raw)
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


def url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"
