"""Duplicate detection (RFC 5080 §2.2.2): a retransmission gets the reply the original got, and nothing
else happens; one arriving while the original is still being worked on is dropped (the NAS retries).

The cache holds every request of the last ``window_s`` seconds (300k entries at 10k requests/s), so its
dicts hold only what the cyclic garbage collector never tracks: bytes keys, bytes and float values. A dict
holding a tuple is tracked, and each full collection then walked every entry, stalling the event loop for
15-25 ms at that size: the whole p99 of a loaded server. (The expiry deque is always tracked, but it is
made with the server, before the daemon freezes its heap, so collections skip it.)
"""

from __future__ import annotations

import collections
from enum import Enum

Key = bytes  # :func:`request_key`


class Seen(Enum):
    NEW = "new"
    IN_PROGRESS = "in_progress"
    ANSWERED = "answered"


_PENDING = b""


def request_key(data: bytes, host: str, port: int) -> Key:
    """What makes a request a retransmission of another: code, Identifier, Request Authenticator, and the
    source address and port it came from."""
    return data[:2] + data[4:20] + f"{host} {port}".encode()


class DuplicateCache:
    def __init__(self, window_s: float, max_entries: int = 1_000_000) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._replies: dict[Key, bytes] = {}  # _PENDING while the request is worked on
        self._deadlines: dict[Key, float] = {}
        # (deadline, key): an expiry entry only removes the reply it was queued for
        self._expiry: collections.deque[tuple[float, Key]] = collections.deque()

    def __len__(self) -> int:
        return len(self._replies)

    def check(self, key: Key, now: float) -> tuple[Seen, bytes]:
        """NEW (now marked in progress), IN_PROGRESS, or ANSWERED with the reply to send again."""
        self._expire(now)
        reply = self._replies.get(key)
        if reply is None:
            if len(self._replies) >= self.max_entries:
                return Seen.NEW, b""  # full: serve it, remember nothing
            deadline = now + self.window_s
            self._replies[key] = _PENDING
            self._deadlines[key] = deadline
            self._expiry.append((deadline, key))
            return Seen.NEW, b""
        if reply is _PENDING:
            return Seen.IN_PROGRESS, b""
        return Seen.ANSWERED, reply

    def answered(self, key: Key, reply: bytes) -> None:
        if key in self._replies:
            self._replies[key] = reply

    def forget(self, key: Key) -> None:
        """The request got no reply (e.g. the store was down): its retransmission is worked on again."""
        if self._replies.pop(key, None) is not None:
            del self._deadlines[key]

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            deadline, key = expiry.popleft()
            if self._deadlines.get(key) == deadline:
                del self._replies[key]
                del self._deadlines[key]
