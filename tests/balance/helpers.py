"""Builders for store-level tests: hand-priced plans, so the Lua scripts are tested without rating."""

from __future__ import annotations

from balance import wire


def item(
    item_id: str = "1",
    *,
    service: str = "voice",
    used: int = 0,
    money: int = 0,
    reserve: int = 0,
    reserve_money: int = 0,
    covered: int = 0,
    smallest: int = 0,
    following: int = 0,
) -> wire.ItemPlan:
    return wire.ItemPlan(
        id=item_id,
        s=service,
        u=used,
        cu=used,
        c=covered,
        m=money,
        raw=money,
        r=reserve,
        rm=reserve_money,
        mn=smallest,
        nx=following,
        cy="",
        lo=-1,
        hi=-1,
    )


def step(
    key: str,
    session: str,
    op: str,
    version: int,
    items: list[wire.ItemPlan],
    *,
    account: str = "acct",
    now: int = 1_800_000_000_000,
    plan: str = "demo",
    ttl_ms: int = 600_000,
) -> wire.SessionStep:
    return wire.SessionStep(
        k=key,
        now=now,
        ttl=ttl_ms,
        ittl=3600,
        sid=session,
        aid=account,
        op=op,
        v=version,
        plan=plan,
        st=now,
        it=items,
    )
