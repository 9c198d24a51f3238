"""Money core benchmark: rating operations/s and reserve+commit script calls/s through the store, next to
raw ``redis-benchmark`` EVALSHA of the same script with the same arguments, in the same run.

    python benchmarks/bench_money_core.py [--duration 5] [--concurrency 32] [--redis redis://127.0.0.1:6379/0]

The measured step is shaped like a CCR-UPDATE: it commits used units (a charge record goes on the stream)
and reserves the next grant, on a fresh session id and idempotency key each call (redis-benchmark fills
the ``__rand_int__`` placeholders, the Python side counts). Paths measured:

- redis-benchmark, 32 connections, unpipelined and pipelined 16 deep: what Redis itself sustains;
- the store over FastLink (the project's pipelining RESP client) and over redis-py (the library);
- the charging service end to end (rating with the demo tariff + planning + the store).

The figure that matters is store/raw: the share of Redis's own script rate the store's Python keeps.
Results are printed and written to benchmarks/results/ with the command and machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import timeit
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from balance import scripts, wire  # noqa: E402
from balance.link import RedisPyLink  # noqa: E402
from balance.records import AccountKind, AccountRecord  # noqa: E402
from balance.service import ChargingService, SessionRequest, UsageItem  # noqa: E402
from balance.settings import BalanceSettings, RedisSettings  # noqa: E402
from balance.store import BalanceStore  # noqa: E402
from rating_core.rating import Usage, price_of, units_for  # noqa: E402
from rating_core.tariff import Catalog  # noqa: E402
from rating_core.tariff_file import load_tariff_file  # noqa: E402

PEAK = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
LONDON = "442079460000"
ACCOUNT = "bench"
PLACEHOLDER = "__rand_int__"  # 12 characters, replaced in place by redis-benchmark


def machine() -> dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis": redis_version,
    }


def bench_rating(catalog: Catalog, seconds: float) -> dict[str, float]:
    plan = catalog.plan("demo", PEAK)
    cases = {
        "price_of voice 125 s London peak": Usage(
            service="voice", quantity=125, start=PEAK, destination=LONDON
        ),
        "price_of voice 240 s across 20:00": Usage(
            service="voice", quantity=240, start=PEAK.replace(hour=19, minute=58), destination=LONDON
        ),
        "price_of data 10 MiB": Usage(service="data", quantity=10_485_760, start=PEAK),
        "price_of sms": Usage(service="sms", quantity=1, start=PEAK),
    }
    out: dict[str, float] = {}
    for name, usage in cases.items():
        out[name] = _rate_per_s(lambda u=usage: price_of(plan, u), seconds / 5)
    base = Usage(service="voice", quantity=300, start=PEAK, destination=LONDON)
    out["units_for voice, 0.10 left"] = _rate_per_s(lambda: units_for(plan, base, 100_000, 300), seconds / 5)
    return out


def _rate_per_s(fn: Callable[[], object], seconds: float) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    runs = max(1, int(seconds / max(timer.timeit(number) / number, 1e-9) / number))
    elapsed = timer.timeit(number * runs)
    return number * runs / elapsed


def _step(session: str, key: str) -> wire.SessionStep:
    item = wire.ItemPlan(
        id="1",
        s="voice",
        u=125,
        cu=180,
        c=0,
        m=240_000,
        raw=240_000,
        r=300,
        rm=400_000,
        mn=80_000,
        nx=80_000,
        cy="",
        lo=-1,
        hi=-1,
    )
    now = int(PEAK.timestamp() * 1000)
    return wire.SessionStep(
        k=key,
        now=now,
        ttl=600_000,
        ittl=600,
        sid=session,
        aid=ACCOUNT,
        op="I",
        v=0,
        plan="demo",
        st=now,
        it=[item],
    )


async def closed_loop(call: Callable[[int], Awaitable[object]], concurrency: int, seconds: float) -> float:
    """Calls/s with `concurrency` callers each issuing its next call when the previous one answered."""
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal count
        n = w
        while time.perf_counter() < deadline:
            await call(n)
            n += concurrency
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return count / (time.perf_counter() - started)


async def prepare(store: BalanceStore) -> None:
    await store.put_account(
        AccountRecord(account_id=ACCOUNT, kind=AccountKind.PREPAID, currency="EUR", plan="demo")
    )
    await store.credit(ACCOUNT, 2**52, key="bench-opening", reason="topup", now=PEAK)


async def cleanup(store: BalanceStore, prefix: str) -> None:
    cursor = b"0"
    while True:
        cursor, keys = await store.link.execute("SCAN", cursor, "MATCH", f"{prefix}:*", "COUNT", 5000)
        if keys:
            await store.link.execute("UNLINK", *keys)
        if cursor in (b"0", 0):
            return


def redis_benchmark(url: str, store: BalanceStore, concurrency: int, pipeline: int, requests: int) -> float:
    """redis-benchmark EVALSHA of the session script with the store's own keys and arguments."""
    k = store.keys.account(ACCOUNT)
    blob = wire.encode_request(_step(f"s{PLACEHOLDER}", f"k{PLACEHOLDER}"))
    keys = [k.account, k.reaper, k.idempotency(f"s:s{PLACEHOLDER}", f"k{PLACEHOLDER}"), k.stream]
    parts = urlsplit(url)
    cmd = [
        "redis-benchmark",
        "-h",
        parts.hostname or "127.0.0.1",
        "-p",
        str(parts.port or 6379),
        "--dbnum",
        str(int(parts.path.lstrip("/") or 0)),
        "-c",
        str(concurrency),
        "-P",
        str(pipeline),
        "-n",
        str(requests),
        "-r",
        "2000000000",
        "-q",
        "-x",
        "EVALSHA",
        scripts.SESSION.sha,
        str(len(keys)),
        *keys,
    ]
    done = subprocess.run(cmd, input=blob, capture_output=True, timeout=600)
    text = done.stdout.decode(errors="replace")
    match = re.findall(r"([\d.]+) requests per second", text)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"redis-benchmark failed: {text} {done.stderr.decode(errors='replace')}")
    return float(match[-1])


async def sessions_opened(store: BalanceStore) -> int:
    """How many sessions the account holds: proves each baseline call did the full step."""
    fields = await store.link.execute("HKEYS", store.keys.account(ACCOUNT).account)
    return sum(1 for f in fields if f.startswith(b"s:"))


async def bench_store(args: argparse.Namespace, catalog: Catalog) -> dict[str, float]:
    prefix = "bench" + uuid.uuid4().hex[:8]
    settings = RedisSettings(url=args.redis, key_prefix=prefix)
    fast = await BalanceStore.connect(settings, BalanceSettings())
    library = await BalanceStore.connect(settings, BalanceSettings(), link=RedisPyLink(args.redis))
    results: dict[str, float] = {}
    try:
        await prepare(fast)
        # redis-benchmark needs a request count: size it to roughly the duration at Redis's own speed
        probe = redis_benchmark(args.redis, fast, args.concurrency, 1, 20_000)
        n = max(20_000, int(probe * args.duration))
        await cleanup(fast, prefix)
        await prepare(fast)
        results["raw redis-benchmark EVALSHA, 32 conn, unpipelined"] = redis_benchmark(
            args.redis, fast, args.concurrency, 1, n
        )
        # a repeated random id would take the cheap replay path: allow a few collisions, no more
        opened = await sessions_opened(fast)
        if opened < n * 0.99:
            raise RuntimeError(
                f"baseline opened {opened} sessions for {n} calls: it did not do the full step"
            )
        results["raw redis-benchmark EVALSHA, 32 conn, pipeline 16"] = redis_benchmark(
            args.redis, fast, args.concurrency, 16, n * 2
        )
        await cleanup(fast, prefix)
        await prepare(fast)
        run = uuid.uuid4().hex[:6]
        for name, store in (("store over FastLink", fast), ("store over redis-py", library)):
            steps = [
                _step(f"{run}{name[9]}{i}", f"{run}{name[9]}{i}") for i in range(int(150_000 * args.duration))
            ]
            results[f"{name}, {args.concurrency} callers"] = await closed_loop(
                lambda i, s=store, st=steps: s.session_step(st[i % len(st)]), args.concurrency, args.duration
            )
            await cleanup(fast, prefix)
            await prepare(fast)
        service = ChargingService(fast, catalog, BalanceSettings(), clock=lambda: PEAK)
        item = (UsageItem(item="voice", service="voice", destination=LONDON, used=125, requested=300),)

        async def charge(i: int) -> object:
            return await service.initiate(
                SessionRequest(account_id=ACCOUNT, session_id=f"svc{i}", key=f"svc{i}", items=item, now=PEAK)
            )

        await charge(-1)  # teaches the service the account's plan
        results[f"charging service (rating + store), {args.concurrency} callers"] = await closed_loop(
            charge, args.concurrency, args.duration
        )
    finally:
        await cleanup(fast, prefix)
        await fast.close()
        await library.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--redis", default=os.environ.get("OCC_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    import uvloop

    catalog = Catalog(load_tariff_file(ROOT / "config" / "tariffs" / "demo.toml"))
    rating = bench_rating(catalog, args.duration)
    store = uvloop.run(bench_store(args, catalog))
    raw = store["raw redis-benchmark EVALSHA, 32 conn, unpipelined"]
    raw_pipelined = store["raw redis-benchmark EVALSHA, 32 conn, pipeline 16"]
    fast = store[f"store over FastLink, {args.concurrency} callers"]
    ratios = {
        "store over FastLink / raw unpipelined": fast / raw,
        "store over FastLink / raw pipelined": fast / raw_pipelined,
        "store over redis-py / raw unpipelined": store[f"store over redis-py, {args.concurrency} callers"]
        / raw,
        "charging service / raw unpipelined": store[
            f"charging service (rating + store), {args.concurrency} callers"
        ]
        / raw,
    }
    report = {
        "benchmark": "money_core",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python "
        + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "machine": machine(),
        "rating_ops_per_s": rating,
        "script_calls_per_s": store,
        "ratios": ratios,
    }
    lines = [f"money core benchmark — {report['when']}", f"command: {report['command']}"]
    lines += [
        f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"Python {report['machine']['python']}, {report['machine']['redis']}"
    ]
    lines.append("rating (one core, ops/s):")
    lines += [f"  {name:<48} {value:>12,.0f}" for name, value in rating.items()]
    lines.append("reserve+commit session script (calls/s):")
    lines += [f"  {name:<60} {value:>10,.0f}" for name, value in store.items()]
    lines.append("ratios:")
    lines += [f"  {name:<48} {value:>6.2f}" for name, value in ratios.items()]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"money_core-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "money_core-latest.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
