"""Access-Request -> Access-Accept or Access-Reject (RFC 2865 §4): authenticate, then authorize from the
account, its tariff plan and its balance.

Authentication against the subscriber's RADIUS identity (``occ identity add --radius-user``): PAP
(User-Password), CHAP (CHAP-Password, with CHAP-Challenge or the Request Authenticator as the challenge) or
MS-CHAPv2 (MS-CHAP-Challenge + MS-CHAP2-Response; the accept carries MS-CHAP2-Success and the MPPE keys).

Authorization: the account must be active and afford something of the access service
(``[radius] service``): unit-bucket units first, then what the money buys under the plan
(:func:`rating_core.units_for`; postpaid accounts down to their credit limit). A prepaid account's
Access-Accept says how much: Session-Timeout for a service counted in seconds, the profile's data-quota
attributes for one counted in bytes. Every accept carries Acct-Interim-Interval, a Class naming the account
(accounting of the session finds it there), and the plan's limits in the NAS profile's attributes.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from aaa import codec, mschap
from aaa.clients import NasClient
from aaa.codec import Packet
from aaa.context import IDENTITY_KIND, RadiusContext
from aaa.values import encode_value, read_text, u32
from balance.records import AccountKind, AccountView
from balance.store import UnknownAccount
from rating_core.rating import Usage, units_for
from rating_core.tariff import NoRate, Plan, Unit, UnknownPlan

CLASS_PREFIX = b"occ:"
MAX_SECONDS = 2**32 - 1  # Session-Timeout is a 32-bit integer
MAX_OCTETS = 2**53 - 1
MS_CHAP_AUTH_FAILURE = b"E=691 R=0 V=3"  # RFC 2759 §6: authentication failure, no retry
MPPE_ENCRYPTION_ALLOWED = 1  # MS-MPPE-Encryption-Policy (RFC 2548 §2.4.4)
MPPE_40_AND_128_BIT = 6  # MS-MPPE-Encryption-Types: RC4 40 and 128 bit (§2.4.5)
PLAN_LIMITS_KEPT = 4096  # (profile, plan) pairs whose reply attributes are kept built


class Decision(NamedTuple):
    code: int  # Access-Accept / Access-Reject
    attributes: list[tuple[int, bytes]]
    outcome: str  # "accept" or the reason of a reject, for the metrics


def class_of(account_id: str) -> bytes:
    return CLASS_PREFIX + account_id.encode()


def account_of_class(value: bytes | None) -> str | None:
    if value is None or not value.startswith(CLASS_PREFIX):
        return None
    return value[len(CLASS_PREFIX) :].decode("utf-8", "replace") or None


async def decide(ctx: RadiusContext, packet: Packet, client: NasClient) -> Decision:
    a = ctx.attrs
    name = read_text(packet.get(a.user_name))
    if not name:
        return _reject(ctx, "no User-Name", "no_user_name")
    ms_response = packet.get(a.ms_chap2_response)
    found = await ctx.charging.store.resolve_identity(IDENTITY_KIND, name)
    if found is None and "\\" in name and ms_response is not None:
        # MS-CHAP clients send DOMAIN\user; the challenge hash uses the bare name, and so does the lookup
        found = await ctx.charging.store.resolve_identity(IDENTITY_KIND, mschap.strip_nt_domain(name))
    if found is None or found[1] is None:
        return _reject(ctx, "unknown user", "unknown_user")
    account_id, password = found[0], found[1]
    extra: list[tuple[int, bytes]] = []
    hidden = packet.get(a.user_password)
    chap = packet.get(a.chap_password)
    ms_challenge = packet.get(a.ms_chap_challenge)
    if hidden is not None:
        revealed = codec.reveal_password(hidden, client.secret, packet.authenticator)
        if revealed != password.encode():
            return _reject(ctx, "wrong password", "bad_password")
    elif chap is not None:
        challenge = packet.get(a.chap_challenge) or packet.authenticator
        if not codec.chap_ok(chap, challenge, password.encode()):
            return _reject(ctx, "wrong password", "bad_password")
    elif ms_response is not None and ms_challenge is not None:
        result = mschap.verify(ms_challenge, ms_response, name, password)
        if result is None:
            ident = ms_response[:1] or b"\x00"
            return _reject(
                ctx, "wrong password", "bad_password", [(a.ms_chap_error, ident + MS_CHAP_AUTH_FAILURE)]
            )
        send_key, recv_key = result.mppe_key_attributes(client.secret, packet.authenticator)
        extra = [
            (a.ms_chap2_success, result.success),
            (a.ms_mppe_send_key, send_key),
            (a.ms_mppe_recv_key, recv_key),
            (a.ms_mppe_encryption_policy, u32(MPPE_ENCRYPTION_ALLOWED)),
            (a.ms_mppe_encryption_types, u32(MPPE_40_AND_128_BIT)),
        ]
    else:
        return _reject(ctx, "no supported credentials (PAP, CHAP or MS-CHAPv2)", "no_credentials")
    try:
        view = await ctx.charging.summary(account_id)
    except UnknownAccount:
        return _reject(ctx, "unknown user", "unknown_user")
    return _authorize(ctx, client, view, extra)


def _authorize(
    ctx: RadiusContext, client: NasClient, view: AccountView, extra: list[tuple[int, bytes]]
) -> Decision:
    a = ctx.attrs
    account = view.account
    if account.status != "active":
        return _reject(ctx, f"account {account.status}", "not_active")
    granted = limits(ctx, client, view)
    if granted is None:
        return _reject(ctx, "no tariff for this service", "no_rate")
    affordable, granted_attributes = granted
    if affordable <= 0:
        return _reject(ctx, "no credit", "no_credit")
    out = [
        (a.class_, class_of(account.account_id)),
        (a.acct_interim_interval, u32(ctx.settings.interim_interval_s)),
        *extra,
        *granted_attributes,
    ]
    return Decision(codec.ACCESS_ACCEPT, out, "accept")


def limits(
    ctx: RadiusContext, client: NasClient, view: AccountView, session_so_far: int = 0
) -> tuple[int, list[tuple[int, bytes]]] | None:
    """The units of the access service the account can use now, and what that means in the NAS profile's
    attributes: the prepaid allowance (Session-Timeout or data quota) and the plan's limits. None when the
    plan cannot rate the service. Used for Access-Accept and for the CoA-Request after a top-up: the NAS
    reads Session-Timeout and data quotas as limits of the whole session, so a running session's are
    ``session_so_far`` (units used and held) plus what its account affords now."""
    a = ctx.attrs
    account = view.account
    now = ctx.clock()
    service = ctx.settings.service
    try:
        plan = ctx.charging.catalog.plan(account.plan, now)
        unit = plan.unit_of(service)
        affordable = _affordable(plan, view, service, unit, now)
    except (UnknownPlan, NoRate, KeyError):
        return None
    out: list[tuple[int, bytes]] = []
    if affordable <= 0:
        return 0, out
    prepaid = account.kind == AccountKind.PREPAID
    profile = ctx.settings.profiles.get(client.profile) or ctx.settings.profiles.get("generic")
    allowance = session_so_far + affordable
    if prepaid and unit is Unit.SECOND:
        out.append((a.session_timeout, u32(min(allowance, MAX_SECONDS))))
    if prepaid and unit is Unit.BYTE and profile is not None and profile.data_quota:
        # without a gigawords attribute the quota stops at 2^32 - 1 (a truncated 0 reads as unlimited)
        quota = min(allowance, MAX_OCTETS if profile.data_quota_gigawords else 0xFFFFFFFF)
        out.append((ctx.dictionary.key(profile.data_quota), u32(quota & 0xFFFFFFFF)))
        if profile.data_quota_gigawords and quota >> 32:
            out.append((ctx.dictionary.key(profile.data_quota_gigawords), u32(quota >> 32)))
    out.extend(_plan_limits(ctx, client.profile, account.plan))
    return affordable, out


def _plan_limits(ctx: RadiusContext, profile_name: str, plan: str) -> tuple[tuple[int, bytes], ...]:
    """The plan's limits in the NAS profile's attributes (Framed-Pool, Idle-Timeout, the profile's reply
    templates): the same in every reply for one (profile, plan), so built once per context (a reload
    brings a new one)."""
    cached = ctx.plan_limits.get((profile_name, plan))
    if cached is not None:
        return cached
    a = ctx.attrs
    out: list[tuple[int, bytes]] = []
    access = ctx.settings.plans.get(plan)
    profile = ctx.settings.profiles.get(profile_name) or ctx.settings.profiles.get("generic")
    if access is not None:
        if access.framed_pool:
            out.append((a.framed_pool, access.framed_pool.encode()))
        if access.idle_timeout_s:
            out.append((a.idle_timeout, u32(access.idle_timeout_s)))
        if profile is not None:
            fields = {"rate_limit": access.rate_limit, "plan": plan}
            for name, template in profile.reply.items():
                text = template.format_map(fields)
                if text:
                    definition = ctx.attribute(name)
                    out.append((definition.key, encode_value(definition, text)))
    if len(ctx.plan_limits) >= PLAN_LIMITS_KEPT:
        ctx.plan_limits.clear()
    ctx.plan_limits[(profile_name, plan)] = limits = tuple(out)
    return limits


def _affordable(plan: Plan, view: AccountView, service: str, unit: Unit, now: datetime) -> int:
    """Units of ``service`` the account can use now: free bucket units plus what its money buys."""
    now_ms = int(now.timestamp() * 1000)
    buckets = sum(
        max(0, b.units - b.reserved)
        for b in view.buckets
        if b.service == service and b.expires_at_ms > now_ms
    )
    money = view.balance + view.account.credit_limit
    cap = MAX_SECONDS if unit is Unit.SECOND else MAX_OCTETS
    bought = units_for(plan, Usage(service, 0, now), money, cap) if money > 0 else 0
    return min(cap, buckets + bought)


def _reject(
    ctx: RadiusContext, message: str, outcome: str, extra: list[tuple[int, bytes]] | None = None
) -> Decision:
    return Decision(
        codec.ACCESS_REJECT, [(ctx.attrs.reply_message, message.encode()), *(extra or [])], outcome
    )
