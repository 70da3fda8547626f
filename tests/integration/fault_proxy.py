"""A fault-injecting HTTP/1.1 proxy for the S3 tests: real TCP between s3fs and moto, with faults on the wire.

The proxy runs an asyncio server in a background thread. Each request travels on a fresh upstream
connection with `Connection: close` (so one client connection carries one request and the framing
stays simple); rules pick requests by method and a substring of the request target and, for their
first `count` matches, answer or break the exchange:

- `latency`: wait `seconds`, then forward;
- `status`: answer `status` with an S3 XML error `code` (503 SlowDown, 500 InternalError, 403 AccessDenied)
  without forwarding;
- `reset`: close the client connection with a TCP RST right after the request head (nothing forwarded);
- `drop_response`: forward the request (the store applies it), then close without answering: a lost response;
- `truncate`: forward, send the response head and half of its body, then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Optional

MODES = ("latency", "status", "reset", "drop_response", "truncate")


@dataclass
class Rule:
    """One fault: which requests (method, substring of the target) and how many of them."""

    mode: str
    path_contains: str = ""
    method: Optional[str] = None
    count: int = 1
    status: int = 503
    code: str = "SlowDown"
    seconds: float = 0.0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; one of {MODES}")

    def matches(self, method: str, target: str) -> bool:
        if self.mode == "truncate" and method == "HEAD":
            return False  # a HEAD answer has no body to cut short
        return (self.hits < self.count and (self.method is None or self.method == method)
                and self.path_contains in target)


@dataclass
class FaultProxy:
    """Listens on 127.0.0.1:`port` and forwards to 127.0.0.1:`upstream_port`, applying `rules`."""

    upstream_port: int
    rules: list[Rule] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, target, fault or "ok")
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, *rules: Rule) -> None:
        with self._lock:
            self.rules.extend(rules)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()

    def start(self) -> "FaultProxy":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def _pick(self, method: str, target: str) -> Optional[Rule]:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, target):
                    rule.hits += 1
                    self.requests.append((method, target, rule.mode))
                    return rule
            self.requests.append((method, target, "ok"))
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target = lines[0].split(" ")[:2]
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
        rule = self._pick(method, target)
        try:
            await self._answer(rule, method, lines, headers, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, rule: Optional[Rule], method: str, lines: list[str], headers: dict[str, str],
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        expects = headers.get("expect", "").lower() == "100-continue"
        if rule is not None and rule.mode == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close -> RST
            writer.transport.abort()
            return
        if rule is not None and rule.mode == "status":
            if not expects:  # read the body the client sends, so it sees our answer rather than a broken pipe
                await reader.readexactly(int(headers.get("content-length") or 0))
            body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{rule.code}</Code>'
                    f"<Message>injected {rule.code}</Message></Error>").encode()
            writer.write(f"HTTP/1.1 {rule.status} {rule.code}\r\nContent-Type: application/xml\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + (b"" if method == "HEAD" else body))
            await writer.drain()
            return
        if rule is not None and rule.mode == "latency":
            await asyncio.sleep(rule.seconds)
        if expects:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        body = await reader.readexactly(int(headers.get("content-length") or 0))
        kept = [ln for ln in lines[1:] if ln and ln.split(":", 1)[0].strip().lower() not in ("connection", "expect")]
        request = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode() + body
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            up_writer.write(request)
            await up_writer.drain()
            response = await up_reader.read()  # the upstream closes after one response
        finally:
            up_writer.close()
        if rule is not None and rule.mode == "drop_response":
            return
        split = response.find(b"\r\n\r\n") + 4
        head, payload = response[:split], response[split:]
        head_lines = [ln for ln in head.decode("latin-1").split("\r\n")
                      if ln and ln.split(":", 1)[0].strip().lower() != "connection"]
        head = "\r\n".join([*head_lines, "Connection: close", "", ""]).encode()
        if rule is not None and rule.mode == "truncate" and len(payload) > 1 and method != "HEAD":
            writer.write(head + payload[: len(payload) // 2])
            await writer.drain()
            writer.transport.abort()
            return
        writer.write(head + payload)
        await writer.drain()


@contextlib.contextmanager
def fault_proxy(upstream_port: int) -> Iterator[FaultProxy]:
    """A started proxy in front of 127.0.0.1:`upstream_port`; stopped afterwards."""
    proxy = FaultProxy(upstream_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
