"""A webhook receiver on loopback that checks each POST's HMAC the way a user's would."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support import serve

KEY = "notify-hmac-key-0123456789abcdef"


WAIT = 20.0


class Receiver:
    """Records every attempt; accepts (204) those whose signature and timestamp verify,
    after answering 500 to the first ``fail_first`` attempts."""

    def __init__(self, key: str = KEY, fail_first: int = 0) -> None:
        self.key = key.encode()
        self.fail_first = fail_first
        self.attempts: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"receiver": self})
        self.httpd, origin = serve(handler)
        self.url = origin + "/hooks/reconciler"

    def verified(self, headers: dict[str, str], body: bytes) -> bool:
        timestamp = headers.get("x-reconciler-timestamp", "")
        signature = headers.get("x-reconciler-signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
            return False
        expected = hmac.new(self.key, timestamp.encode() + b"." + body, hashlib.sha256)
        return hmac.compare_digest("sha256=" + expected.hexdigest(), signature)

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            attempt = {"headers": headers, "body": body}
            self.attempts.append(attempt)
            if len(self.attempts) <= self.fail_first:
                attempt["status"] = 500
                return 500
            if not self.verified(headers, body):
                attempt["status"] = 401
                return 401
            self.events.append(
                {**json.loads(body), "delivery": headers.get("x-reconciler-delivery")}
            )
            attempt["status"] = 204
            return 204

    def named(self, event: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e["event"] == event]

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; attempts: {self.attempts}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    receiver: Receiver

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        status = self.receiver.answer(headers, body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
