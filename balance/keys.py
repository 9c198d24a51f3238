"""Redis key layout.

Accounts are spread over ``partitions`` hash-tag partitions. Every key a money script touches carries its
account's partition tag, so one script call stays inside one Redis Cluster slot — and each partition has
one charge stream and one reaper index in that same slot, which is what lets the script that moves money
append the charge record in the same atomic step.

    {prefix}:{<p>}:a:<account>          account hash: money, status, plan, unit buckets, open sessions with
                                        their reservations, tier counters (fields: see balance/lua/lib.lua)
    {prefix}:{<p>}:i:<account>:<kind>:<key>  stored answer of an idempotency key; kind s:<session> (session
                                        steps, TTL), e (events, TTL), c (credits, kept for good)
    {prefix}:{<p>}:x                    reaper index: "<account>|<session>" scored by expiry ms
    {prefix}:{<p>}:c                    charge stream of the partition
    {prefix}:id:<kind>:<value>          identity -> account (hash: account, secret)
    {prefix}:so:<session id>            account of a protocol session (Diameter Session-Id, RADIUS)
    {prefix}:nas:<nas>                  RADIUS sessions a NAS has open: session id -> "<account>|<user>"
    {prefix}:sc:<session id>            a closed protocol session's last running total (late reports)
    {prefix}:notify                     pub/sub channel: "credit|<account>", "status|<account>|<status>"
"""

from __future__ import annotations

import re
import zlib

import msgspec

# Account ids go into key names and "<account>|<session>" reaper members: no ":" or "|" in them.
ACCOUNT_ID = re.compile(r"[A-Za-z0-9._@+-]{1,64}")


class AccountKeys(msgspec.Struct, frozen=True, gc=False):  # cached for 65,536 accounts: untracked
    account: str
    reaper: str
    stream: str
    idempotency_prefix: str

    def idempotency(self, kind: str, key: str) -> str:
        """Keys of different kinds of request never collide: a refund is no replay of an event."""
        return f"{self.idempotency_prefix}{kind}:{key}"


# Account keys are built for every request; the latest few thousand accounts' are kept (a bounded
# cache: emptied whole when full, which costs one rebuild per account).
_ACCOUNT_KEYS_KEPT = 65_536


class KeySpace:
    __slots__ = ("_accounts", "partitions", "prefix")

    def __init__(self, prefix: str, partitions: int) -> None:
        self.prefix = prefix
        self.partitions = partitions
        self._accounts: dict[str, AccountKeys] = {}

    def partition(self, account_id: str) -> int:
        return zlib.crc32(account_id.encode()) % self.partitions

    def _tag(self, partition: int) -> str:
        return f"{self.prefix}:{{{partition}}}"

    def account(self, account_id: str) -> AccountKeys:
        keys = self._accounts.get(account_id)
        if keys is None:
            tag = self._tag(self.partition(account_id))
            keys = AccountKeys(
                account=f"{tag}:a:{account_id}",
                reaper=f"{tag}:x",
                stream=f"{tag}:c",
                idempotency_prefix=f"{tag}:i:{account_id}:",
            )
            if len(self._accounts) >= _ACCOUNT_KEYS_KEPT:
                self._accounts.clear()
            self._accounts[account_id] = keys
        return keys

    def stream(self, partition: int) -> str:
        return f"{self._tag(partition)}:c"

    def reaper(self, partition: int) -> str:
        return f"{self._tag(partition)}:x"

    def identity(self, kind: str, value: str) -> str:
        return f"{self.prefix}:id:{kind}:{value}"

    def session_owner(self, session_id: str) -> str:
        return f"{self.prefix}:so:{session_id}"

    def nas_sessions(self, nas: str) -> str:
        return f"{self.prefix}:nas:{nas}"

    def closed_session(self, session_id: str) -> str:
        return f"{self.prefix}:sc:{session_id}"

    @property
    def notifications(self) -> str:
        return f"{self.prefix}:notify"
