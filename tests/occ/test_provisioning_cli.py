"""The provisioning commands as an operator runs them: a real ``occ`` process, real PostgreSQL and Redis.

What crosses the boundary here is the process interface: arguments in; stdout, one-line stderr and the
exit status out (0 done, 1 failed at run time, 2 bad input).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

REPO = Path(__file__).resolve().parents[2]
DEMO_TARIFF = REPO / "config" / "tariffs" / "demo.toml"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def write_config(path: Path, redis_url: str, key_prefix: str, database_url: str) -> Path:
    path.write_text(
        f'[redis]\nurl = "{redis_url}"\nkey_prefix = "{key_prefix}"\n\n[database]\nurl = "{database_url}"\n',
        encoding="utf-8",
    )
    return path


def run_occ(config: Path, *args: str, stdin: str | None = None) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCC_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    argv = [*args, "--config", str(config)]  # options may follow the positionals
    proc = subprocess.run(
        [sys.executable, "-m", "occ", *argv],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def one_line_error(result: Result, code: int) -> str:
    assert result.code == code, result
    assert result.err.startswith("occ"), result.err
    assert result.err.count("\n") == 1, result.err
    return result.err


@pytest.fixture
async def demo_plan(database_url: str) -> str:
    from billing.tariff_store import install_tariff, load_catalog

    conn = await asyncpg.connect(database_url)
    try:
        if await conn.fetchval("select 1 from tariff_versions where plan = 'demo' limit 1") is None:
            await install_tariff(conn, DEMO_TARIFF.read_text(encoding="utf-8"), DEMO_TARIFF.name)
        plan = (await load_catalog(conn)).plan("demo", at=datetime.now(UTC))
    finally:
        await conn.close()
    return plan.currency


@pytest.fixture
async def config(tmp_path: Path, redis_url: str, key_prefix: str, database_url: str) -> AsyncIterator[Path]:
    yield write_config(tmp_path / "occ.toml", redis_url, key_prefix, database_url)


def new_id() -> str:
    return "cli-" + uuid.uuid4().hex[:12]


def create(config: Path, currency: str, account_id: str, *extra: str) -> Result:
    return run_occ(
        config,
        "account",
        "create",
        account_id,
        "--type",
        "prepaid",
        "--plan",
        "demo",
        "--currency",
        currency,
        *extra,
    )


async def test_db_migrate_on_a_migrated_database_is_up_to_date(config: Path) -> None:
    result = run_occ(config, "db", "migrate")
    assert (result.code, result.out) == (0, "up to date\n")


async def test_account_create_exists_and_conflict(config: Path, demo_plan: str) -> None:
    account_id = new_id()
    first = create(config, demo_plan, account_id)
    assert first.code == 0, first
    assert f"account {account_id} created" in first.out
    again = create(config, demo_plan, account_id)
    assert again.code == 0, again
    assert f"account {account_id} exists" in again.out
    conflict = run_occ(
        config,
        "account",
        "create",
        account_id,
        "--type",
        "postpaid",
        "--plan",
        "demo",
        "--currency",
        demo_plan,
        "--credit-limit",
        "5",
    )
    assert "exists with kind prepaid" in one_line_error(conflict, 1)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("bad id!",), "invalid account ID"),
        (("x", "--credit-limit", "5"), "postpaid accounts only"),
        (("x", "--plan", "nope"), "unknown plan"),
    ],
)
async def test_account_create_bad_input_exits_2(
    config: Path, demo_plan: str, args: tuple[str, ...], fragment: str
) -> None:
    account_id, *extra = args
    account_id = account_id if account_id != "x" else new_id()
    result = create(config, demo_plan, account_id, *extra)
    assert fragment in one_line_error(result, 2)


async def test_topup_with_repeated_reference_credits_once(config: Path, demo_plan: str) -> None:
    account_id = new_id()
    assert create(config, demo_plan, account_id).code == 0
    first = run_occ(config, "topup", account_id, "10.00", "--reference", "r-1", "--json")
    assert first.code == 0, first
    assert first.json()["duplicate"] is False
    second = run_occ(config, "topup", account_id, "10.00", "--reference", "r-1", "--json")
    assert second.code == 0, second
    assert second.json()["duplicate"] is True
    balance = run_occ(config, "balance", account_id, "--json")
    assert balance.code == 0, balance
    data = balance.json()
    assert data["balance"] == 10_000_000
    assert data["formatted"]["balance"] == "10.00"
    assert data["available"] == 10_000_000
    assert data["account"]["account_id"] == account_id
    human = run_occ(config, "balance", account_id)
    assert human.code == 0 and "10.00" in human.out
    conflict = run_occ(config, "topup", account_id, "12.00", "--reference", "r-1")
    assert "was used for a top-up of 10.00" in one_line_error(conflict, 1)


@pytest.mark.parametrize("amount", ["ten", "0", "0.00", "-5", "1.0000001"])
async def test_topup_bad_amount_exits_2(config: Path, demo_plan: str, amount: str) -> None:
    result = run_occ(config, "topup", new_id(), amount)
    one_line_error(result, 2)


async def test_unknown_account_exits_2(config: Path, demo_plan: str) -> None:
    assert "unknown account" in one_line_error(run_occ(config, "topup", new_id(), "1.00"), 2)
    assert "unknown account" in one_line_error(run_occ(config, "balance", new_id()), 2)
    assert "unknown account" in one_line_error(
        run_occ(config, "account", "set-status", new_id(), "blocked"), 2
    )


async def test_identity_add_and_its_validation(config: Path, demo_plan: str) -> None:
    account_id = new_id()
    assert create(config, demo_plan, account_id).code == 0
    msisdn = str(46_700_000_000 + uuid.uuid4().int % 10**8)
    ok = run_occ(config, "identity", "add", account_id, "--msisdn", msisdn)
    assert ok.code == 0, ok
    user = "u" + uuid.uuid4().hex[:8]
    radius = run_occ(config, "identity", "add", account_id, "--radius-user", user, "--password", "Sw0rdfish")
    assert radius.code == 0, radius
    assert "Sw0rdfish" not in radius.out + radius.err
    from_stdin = run_occ(
        config, "identity", "add", account_id, "--radius-user", user, "--password", "-", stdin="n3w\n"
    )
    assert from_stdin.code == 0 and "password changed" in from_stdin.out
    assert "n3w" not in from_stdin.out + from_stdin.err

    assert "digits" in one_line_error(run_occ(config, "identity", "add", account_id, "--msisdn", "+4670"), 2)
    assert "needs --password" in one_line_error(
        run_occ(config, "identity", "add", account_id, "--radius-user", "u"), 2
    )
    bad = run_occ(config, "identity", "add", account_id, "--imsi", "240071234567890", "--password", "pw")
    assert "--radius-user only" in one_line_error(bad, 2)
    one_line_error(run_occ(config, "identity", "add", account_id, "--msisdn", "1", "--imsi", "2"), 2)
    one_line_error(run_occ(config, "identity", "add", account_id), 2)
    other = new_id()
    assert create(config, demo_plan, other).code == 0
    taken = run_occ(config, "identity", "add", other, "--msisdn", msisdn)
    assert "belongs to account" in one_line_error(taken, 1)


async def test_bucket_add_and_bad_dates(config: Path, demo_plan: str) -> None:
    account_id = new_id()
    assert create(config, demo_plan, account_id).code == 0
    options = ["--service", "data", "--units", "1000", "--expires", "2099-01-01T00:00:00Z"]
    added = run_occ(config, "bucket", "add", account_id, *options, "--bucket-id", f"{account_id}:b1")
    assert added.code == 0, added
    view = run_occ(config, "balance", account_id, "--json").json()
    assert {"bucket_id": f"{account_id}:b1", "units": 1000}.items() <= next(
        b for b in view["buckets"] if b["bucket_id"] == f"{account_id}:b1"
    ).items()
    for expires, fragment in (("tomorrow", "invalid --expires"), ("2000-01-01", "not in the future")):
        result = run_occ(
            config, "bucket", "add", account_id, "--service", "data", "--units", "1", "--expires", expires
        )
        assert fragment in one_line_error(result, 2)


async def test_rebuild_restores_a_deleted_account(
    config: Path, demo_plan: str, redis_url: str, key_prefix: str
) -> None:
    account_id = new_id()
    assert create(config, demo_plan, account_id).code == 0
    assert run_occ(config, "topup", account_id, "4.20").code == 0
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{key_prefix}:*", count=1000)]
        await client.delete(*keys)
    finally:
        await client.aclose()
    assert "unknown account" in one_line_error(run_occ(config, "balance", account_id), 2)
    rebuilt = run_occ(config, "redis", "rebuild", "--json")
    assert rebuilt.code == 0, rebuilt
    assert rebuilt.json()["restored"] >= 1
    assert run_occ(config, "balance", account_id, "--json").json()["balance"] == 4_200_000
    assert run_occ(config, "redis", "rebuild").out.startswith("restored 0 of ")


async def test_unreachable_services_exit_1_with_one_line(
    tmp_path: Path, config: Path, redis_url: str, key_prefix: str, database_url: str, demo_plan: str
) -> None:
    no_redis = write_config(tmp_path / "no-redis.toml", "redis://127.0.0.1:1/0", key_prefix, database_url)
    one_line_error(run_occ(no_redis, "balance", new_id()), 1)
    one_line_error(run_occ(no_redis, "topup", new_id(), "1.00"), 1)
    base = database_url.rpartition("@")[2].partition("/")[2]
    no_pg = write_config(
        tmp_path / "no-pg.toml", redis_url, key_prefix, f"postgresql://occ:hunter2@127.0.0.1:1/{base}"
    )
    for args in (("db", "migrate"), ("topup", new_id(), "1.00"), ("redis", "rebuild")):
        err = one_line_error(run_occ(no_pg, *args), 1)
        assert "hunter2" not in err
        assert "PostgreSQL" in err


async def test_status_and_show(config: Path, demo_plan: str) -> None:
    account_id = new_id()
    assert create(config, demo_plan, account_id).code == 0
    assert run_occ(config, "account", "set-status", account_id, "suspended").code == 0
    assert run_occ(config, "balance", account_id, "--json").json()["account"]["status"] == "suspended"
    one_line_error(run_occ(config, "account", "set-status", account_id, "sleeping"), 2)
    user = "u" + uuid.uuid4().hex[:8]
    assert (
        run_occ(config, "identity", "add", account_id, "--radius-user", user, "--password", "pa55").code == 0
    )
    shown = run_occ(config, "account", "show", account_id, "--json")
    assert shown.code == 0, shown
    data = shown.json()
    assert data["account"]["status"] == "suspended" and data["in_redis"] is True
    assert {"kind": "radius_user", "value": user, "has_password": True} in data["identities"]
    assert "pa55" not in shown.out
