"""Duplicate detection (RFC 5080 §2.2.2): a retransmission gets the reply the original got, and nothing
else happens; one arriving while the original is still being worked on is dropped (the NAS retries)."""

from __future__ import annotations

import collections
from enum import Enum

Key = tuple[str, int, int, int, bytes]  # source address, source port, code, Identifier, Authenticator


class Seen(Enum):
    NEW = "new"
    IN_PROGRESS = "in_progress"
    ANSWERED = "answered"


_PENDING = b""


class DuplicateCache:
    def __init__(self, window_s: float, max_entries: int = 1_000_000) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        # key -> (reply, its deadline); an expiry entry only removes the reply it was queued for
        self._replies: dict[Key, tuple[bytes, float]] = {}
        self._expiry: collections.deque[tuple[float, Key]] = collections.deque()

    def __len__(self) -> int:
        return len(self._replies)

    def check(self, key: Key, now: float) -> tuple[Seen, bytes]:
        """NEW (now marked in progress), IN_PROGRESS, or ANSWERED with the reply to send again."""
        self._expire(now)
        entry = self._replies.get(key)
        if entry is None:
            if len(self._replies) >= self.max_entries:
                return Seen.NEW, b""  # full: serve it, remember nothing
            deadline = now + self.window_s
            self._replies[key] = (_PENDING, deadline)
            self._expiry.append((deadline, key))
            return Seen.NEW, b""
        if entry[0] is _PENDING:
            return Seen.IN_PROGRESS, b""
        return Seen.ANSWERED, entry[0]

    def answered(self, key: Key, reply: bytes) -> None:
        entry = self._replies.get(key)
        if entry is not None:
            self._replies[key] = (reply, entry[1])

    def forget(self, key: Key) -> None:
        """The request got no reply (e.g. the store was down): its retransmission is worked on again."""
        self._replies.pop(key, None)

    def _expire(self, now: float) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            deadline, key = expiry.popleft()
            entry = self._replies.get(key)
            if entry is not None and entry[1] == deadline:
                del self._replies[key]
