"""A deliberately tiny asyncio HTTP/1.1 server for ``/metrics`` and ``/health``.

Scope: one request per connection (``Connection: close``), GET and HEAD only, no request bodies, no
chunked encoding. Everything a client can make us spend is bounded: header bytes, body bytes we drain,
time to send the request, time to take the answer, and concurrent connections. It is an operations
endpoint for Prometheus and load balancers on a trusted network, not a general web server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from occ import log, metrics

_log = log.get(__name__)

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[], Awaitable[Response]]


class HttpEndpoint:
    """Serves ``routes`` (exact path -> handler) until :meth:`close`."""

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        max_request_bytes: int = 8192,
        read_timeout_s: float = 5.0,
        write_timeout_s: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        self._routes = dict(routes)
        self._max_request = max_request_bytes
        self._read_timeout = read_timeout_s
        self._write_timeout = write_timeout_s
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        """Bind and start accepting; raises OSError when the address cannot be bound."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=self._max_request)

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self, grace_s: float = 1.0) -> None:
        """Stop accepting; let connections in progress finish for up to ``grace_s``, then cut them."""
        if self._server is None:
            return
        self._server.close()
        if self._connections:
            _, pending = await asyncio.wait(set(self._connections), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self._max_connections:
            writer.transport.abort()
            return
        self._connections.add(task)
        try:
            status, body, ctype, head_only, label = await self._answer(reader)
            await asyncio.wait_for(self._send(writer, status, body, ctype, head_only), self._write_timeout)
            metrics.HTTP_REQUESTS.labels(path=label, code=str(status)).inc()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or is too slow: nothing to answer
        finally:
            self._connections.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, bytes, str, bool, str]:
        """(status, body, content type, omit body, path label) for the request on ``reader``."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._read_timeout)
        except asyncio.LimitOverrunError:
            return _plain(431, "request header too large\n", "other")
        except TimeoutError:
            return _plain(408, "request not received in time\n", "other")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[1].startswith("/"):
            return _plain(400, "malformed request line\n", "other")
        method, target, version = parts
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            return _plain(505, "only HTTP/1.0 and HTTP/1.1\n", "other")
        length = _content_length(lines[1:])
        if length is None:
            return _plain(400, "bad Content-Length or Transfer-Encoding\n", "other")
        if length > self._max_request:
            return _plain(413, "request body too large\n", "other")
        if length:  # drained so the client reads our answer instead of a connection reset
            await asyncio.wait_for(reader.readexactly(length), self._read_timeout)
        path = target.split("?", 1)[0]
        handler = self._routes.get(path)
        if handler is None:
            return _plain(404, "not found\n", "other")
        if method not in ("GET", "HEAD"):
            return _plain(405, "only GET and HEAD\n", path)
        try:
            response = await handler()
        except Exception:
            _log.exception("http handler failed", path=path)
            return _plain(500, "internal error\n", path)
        return response.status, response.body, response.content_type, method == "HEAD", path

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str, head_only: bool
    ) -> None:
        headers = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
        ]
        if status == 405:
            headers.append("Allow: GET, HEAD")
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


def _plain(status: int, text: str, label: str) -> tuple[int, bytes, str, bool, str]:
    return status, text.encode(), "text/plain; charset=utf-8", False, label


def _content_length(header_lines: list[str]) -> int | None:
    """The request body length (0 without a body), or None if it cannot be trusted."""
    length = 0
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == "transfer-encoding":
            return None
        if name == "content-length":
            value = value.strip()
            if not value.isdigit():
                return None
            length = int(value)
    return length
