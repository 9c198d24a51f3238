"""``occ tariff check`` and ``occ rate --tariff`` in-process: output, exit status, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from occ.cli import main

DEMO = str(Path(__file__).resolve().parents[2] / "config" / "tariffs" / "demo.toml")
RATE = ["rate", "--tariff", DEMO, "--plan", "demo", "--start", "2025-03-03T19:59:00Z"]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OCC_CONFIG", "OCC_DATABASE_URL", "OCC_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    assert err.startswith("occ"), err
    assert err.count("\n") == 1, err
    return err.strip()


def bad_tariff(tmp_path: Path, body: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text('timezone = "UTC"\ncurrency = "EUR"\n' + body, encoding="utf-8")
    return str(path)


PLAN = '[[plan]]\nname = "p"\neffective_from = "2025-01-01"\n[plan.services.sms]\nunit = "event"\n'


def test_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "tariff", "check", DEMO) == (0, "ok: 2 plans\n", "")


def test_check_ok_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tariff", "check", DEMO, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["ok"] is True and doc["problems"] == []
    assert doc["plans"] == ["demo", "demo-plus"]


def test_check_lists_every_problem_and_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rates = '[[plan.services.sms.rates]]\nname = "a"\nprefix = "x1"\nprice = "-1"\n'
    path = bad_tariff(tmp_path, PLAN + rates)
    code, out, err = run(capsys, "tariff", "check", path)
    assert code == 2 and err == ""
    assert out.splitlines() == [
        f'{path}: plan "p" rate "sms/x1 a": prefix: "x1" is not a digit string: no destination matches it '
        "(unreachable)",
        f'{path}: plan "p" rate "sms/x1 a": price: negative price -1.00',
    ]
    code, out, _ = run(capsys, "tariff", "check", path, "--json")
    doc = json.loads(out)
    assert code == 2 and doc["ok"] is False and len(doc["problems"]) == 2
    assert doc["problem_details"][1] == {
        "plan": "p",
        "version": None,
        "rate": "sms/x1 a",
        "key": "price",
        "message": "negative price -1.00",
    }


def test_check_malformed_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = bad_tariff(tmp_path, PLAN + '[[plan.services.sms.rates]]\nname = "a"\nprice = -1\n')
    code, out, _ = run(capsys, "tariff", "check", path)
    assert (code, out) == (2, f'{path}: plan "p" rate "sms/* a": price: expected a decimal string, got -1\n')


def test_check_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "tariff", "check", str(tmp_path / "nope.toml"))
    assert code == 2 and out == ""
    assert one_line(err) == f"occ: {tmp_path / 'nope.toml'}: file not found"


def test_rate_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, *RATE, "--service", "voice", "--destination", "442079460000", "--quantity", "90"
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "plan demo (version from 2025-01-01T00:00:00+00:00), EUR"
    assert lines[1] == "voice 442079460000: rate 'London' (prefix 4420); 90 s used, 120 s charged"
    assert lines[2].split() == ["band", "tier", "units", "price", "amount", "start"]
    assert lines[3].split() == ["peak", "0", "60", "0.08/60", "s", "0.08", "2025-03-03T19:59:00+00:00"]
    assert lines[4].split() == ["offpeak", "0", "60", "0.04/60", "s", "0.04", "2025-03-03T20:00:00+00:00"]
    assert lines[-2:] == ["setup fee 0.00, minimum adjustment 0.00", "total 0.12 EUR"]


def test_rate_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, *RATE, "--service", "voice", "--destination", "447700900123", "--quantity", "20", "--json"
    )
    doc = json.loads(out)
    assert code == 0
    assert (doc["rate"], doc["charged_units"], doc["raw"], doc["minimum_adjustment"]) == (
        "UK mobile",
        60,
        200_000,
        100_000,
    )
    assert (doc["amount"], doc["amount_formatted"], doc["currency"]) == (300_000, "0.30", "EUR")
    assert doc["segments"] == [
        {
            "band": "peak",
            "tier": 0,
            "units": 60,
            "price": 200_000,
            "price_formatted": "0.20",
            "block": 60,
            "amount": 200_000,
            "amount_formatted": "0.20",
            "start": "2025-03-03T19:59:00+00:00",
        }
    ]


def test_rate_continuation_and_data(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, *RATE, "--service", "data", "--quantity", "1048576", "--offset", "1024", "--json"
    )
    doc = json.loads(out)
    assert (code, doc["charged_units"], doc["amount"], doc["segments"][0]["start"]) == (
        0,
        1_048_576,
        10_000,
        None,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plan", "nope", "--service", "voice", "--quantity", "1"], 'occ: unknown plan "nope"'),
        (["--plan", "demo", "--service", "fax", "--quantity", "1"], 'occ: plan "demo" has no service "fax"'),
    ],
)
def test_rate_unknown_plan_or_service(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = ["rate", "--tariff", DEMO, "--start", "2025-03-03T19:59:00Z", *args]
    code, out, err = run(capsys, *argv)
    assert (code, out, one_line(err)) == (2, "", message)


def test_rate_before_the_plan_starts(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["rate", "--tariff", DEMO, "--plan", "demo", "--service", "sms", "--quantity", "1"]
    code, _, err = run(capsys, *argv, "--start", "2024-06-01T00:00:00+01:00")
    assert code == 2 and 'plan "demo" is not in force at 2024-06-01T00:00:00+01:00' in one_line(err)


def test_rate_bad_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = ["rate", "--tariff", DEMO, "--plan", "demo", "--service", "voice"]
    code, _, err = run(capsys, *base, "--start", "2025-03-03T19:59:00", "--quantity", "1")
    assert code == 2 and "has no UTC offset" in one_line(err)
    code, _, err = run(capsys, *base, "--start", "yesterday", "--quantity", "1")
    assert code == 2 and "expected an ISO 8601 date-time" in one_line(err)
    with pytest.raises(SystemExit) as info:
        main([*base, "--start", "2025-03-03T19:59:00Z", "--quantity", "-1"])
    assert info.value.code == 2
    assert "must not be negative" in one_line(capsys.readouterr().err)
    bad = bad_tariff(tmp_path, PLAN + '[[plan.services.sms.rates]]\nname = "a"\nprice = "-1"\n')
    code, _, err = run(
        capsys,
        "rate",
        "--tariff",
        bad,
        "--plan",
        "p",
        "--service",
        "sms",
        "--start",
        "2025-03-03T19:59:00Z",
        "--quantity",
        "1",
    )
    assert code == 2 and one_line(err) == f'occ: {bad}: plan "p" rate "sms/* a": price: negative price -1.00'


def test_database_unreachable_is_one_line_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "occ.toml"
    config.write_text('[database]\nurl = "postgresql://postgres@127.0.0.1:1/none"\nconnect_timeout_s = 2.0\n')
    code, out, err = run(capsys, "tariff", "load", DEMO, "--config", str(config))
    assert code == 1 and out == ""
    assert one_line(err).startswith(
        "occ: cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:1/none"
    )
    argv = [
        "rate",
        "--plan",
        "demo",
        "--service",
        "sms",
        "--start",
        "2025-03-03T19:59:00Z",
        "--quantity",
        "1",
    ]
    code, _, err = run(capsys, *argv, "--config", str(config))
    assert code == 1 and "cannot connect to PostgreSQL" in one_line(err)


def test_load_refuses_a_file_with_problems_before_connecting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "occ.toml"
    config.write_text('[database]\nurl = "postgresql://postgres@127.0.0.1:1/none"\n')
    bad = bad_tariff(tmp_path, PLAN + '[[plan.services.sms.rates]]\nname = "a"\nprice = "-1"\n')
    code, out, err = run(capsys, "tariff", "load", bad, "--config", str(config))
    assert code == 2
    assert out == f'{bad}: plan "p" rate "sms/* a": price: negative price -1.00\n'
    assert one_line(err) == f"occ: {bad}: not installed: 1 problem(s), see above"
