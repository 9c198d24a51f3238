"""The report of ``occ bench radius``: checks, ratios and goals, and text (its files are written by
:func:`occ.bench_common.write_results`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from occ.bench_common import (
    cpu_lines,
    exit_lines,
    head_lines,
    latency_summary,
    peak_and_share,
    peak_lines,
    reconcile_lines,
    target_healthy,
    verdict_lines,
)
from occ.radius_bench.load import ACCT, AUTH, PhaseResult

EXPECTED_REPLY = {AUTH: "Access-Accept", ACCT: "Accounting-Response"}
GOAL_ACCT = "acct answers/s at peak >= 1.0x FreeRADIUS stock accounting"
GOAL_AUTH = "PAP auth answers/s at peak >= 0.5x FreeRADIUS users-file auth"
NOTE_CPU_BUSY = 0.25  # other processes using more than this share of a core make a phase suspect


def replies_check(mode: str, phases: Sequence[PhaseResult]) -> dict[str, Any]:
    """Every reply occ sent must be the one a bench subscriber's request deserves (Access-Accept for the
    right password; Accounting-Response)."""
    expected = EXPECTED_REPLY[mode]
    good = other = 0
    kinds: dict[str, int] = {}
    for phase in phases:
        for stats in phase.stats.values():
            for name, n in stats.replies.items():
                if name == expected:
                    good += n
                elif name != "timeout":
                    other += n
                    kinds[name] = kinds.get(name, 0) + n
    return {
        "status": "failed" if other else "ok",
        "expected": expected,
        "expected_replies": good,
        "other_replies": kinds,
        "unmatched_replies": sum(p.unmatched for p in phases),
    }


def goals_and_ratios(
    mode: str, ours: Sequence[PhaseResult], theirs: Sequence[PhaseResult], load_share: float
) -> tuple[dict[str, float | None], dict[str, Any]]:
    peak, share = peak_and_share(ours)
    their_peak = peak_and_share(theirs)[0] if theirs else None
    ratio = (
        peak.answers_per_s() / their_peak.answers_per_s()
        if their_peak and their_peak.answers_per_s()
        else None
    )
    ratios: dict[str, float | None] = {f"occ / FreeRADIUS, {mode} answers/s at peak": ratio}
    goals: dict[str, Any] = {}
    for goal, goal_mode, target in ((GOAL_ACCT, ACCT, 1.0), (GOAL_AUTH, AUTH, 0.5)):
        if goal_mode != mode:
            goals[goal] = {"value": None, "met": False, "why": f"not measured: --mode {goal_mode}"}
        else:
            why = "" if ratio is not None else "not measured: no FreeRADIUS baseline"
            goals[goal] = {"value": ratio, "met": ratio is not None and ratio >= target, "why": why}
    name = f"{mode} p99 <= 5 ms at {load_share * 100:g}% of peak (a timeout counts as --timeout)"
    if share is not None:
        every = [x for stats in share.stats.values() for x in stats.latencies]
        every += [share.spec.timeout] * share.timeouts
        p99 = latency_summary(every)["p99_ms"]
        goals[name] = {"value": p99, "met": p99 <= 5.0, "why": ""}
    else:
        goals[name] = {"value": None, "met": False, "why": "not measured: needs --find-peak"}
    return ratios, goals


# ---- text --------------------------------------------------------------------------------------------


def _phase_lines(name: str, phase: Mapping[str, Any]) -> list[str]:
    acct = phase["mode"] == ACCT
    offered = f"offered {phase['offered_requests_per_s']:,.1f} requests/s"
    if acct:
        offered += (
            f" ({phase['offered_sessions_per_s']:,.1f} sessions/s of Start + {phase['interims']} x Interim + "
            "Stop)"
        )
    unit = "sessions" if acct else "requests"
    lines = [
        "",
        f"{name}: {offered} for {phase['duration_s']:g} s; {unit} sent {phase['started']}, skipped (no free "
        f"identifier) {phase['skipped_no_free_identifier']}; {phase['answers_per_s']:,.0f} answers/s; "
        f"timeouts {phase['timeouts']}; max outstanding {phase['max_outstanding']}"
        + ("; kept up with the offered rate" if phase.get("kept_up") else ""),
        f"  {'':8} {'answers':>8} {'per s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        "  replies",
    ]
    for kind, t in [*phase["types"].items(), ("all", phase["all"])]:
        replies = ", ".join(f"{c}: {n}" for c, n in t.get("replies", {}).items())
        rate = f"{t['answers_per_s']:>9,.0f}" if "answers_per_s" in t else f"{'':>9}"
        lines.append(
            f"  {kind:<8} {t['answers']:>8} {rate} {t['p50_ms']:>8.2f} {t['p95_ms']:>8.2f} "
            f"{t['p99_ms']:>8.2f} {t['max_ms']:>8.1f}  {replies}".rstrip()
        )
    notes = []
    if phase.get("server_socket_drops"):
        notes.append(
            f"datagrams dropped at the server's socket (receive buffer full) {phase['server_socket_drops']}"
        )
    udp = {k: v for k, v in (phase.get("udp_errors_machine") or {}).items() if v}
    if udp:
        notes.append("UDP errors on the machine " + ", ".join(f"{k} {v}" for k, v in udp.items()))
    if phase.get("unmatched_replies"):
        notes.append(f"unmatched replies (late, or a bad authenticator) {phase['unmatched_replies']}")
    if phase.get("stops_sent_again"):
        notes.append(
            f"Stops unanswered in the phase, sent again after it {phase['stops_sent_again']} "
            f"(answered {phase['stops_answered_again']})"
        )
    if phase.get("packets_signed_again"):
        notes.append(f"packets signed again for another Identifier {phase['packets_signed_again']}")
    lines.extend(f"  {note}" for note in notes)
    lines.extend(cpu_lines(phase, NOTE_CPU_BUSY))
    return lines


def _check_lines(report: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    c = report.get("conservation")
    if c:
        head = f"money conservation: {c['status'].upper()} — {c['accounts']} bench accounts, "
        if report.get("mode") == AUTH:
            lines.append(
                head + f"Access-Requests must charge nothing: charged {c['charged_micros']} µ, "
                f"reserved {c['reserved_micros']} µ"
            )
        else:
            lines.append(
                head + f"expected {c['expected_micros']} µ, charged {c['charged_micros']} µ, reserved "
                f"{c['reserved_micros']} µ, sessions whose Stop was never answered {c['unanswered_requests']}"
            )
        lines.extend(f"  mismatch: {m}" for m in c["mismatches"][:5])
    lines.extend(reconcile_lines(report))
    r = report.get("replies")
    if r:
        other = ", ".join(f"{k}: {n}" for k, n in r["other_replies"].items()) or "none"
        lines.append(
            f"occ replies: {r['status'].upper()} — {r['expected']}: {r['expected_replies']}, other: {other}, "
            f"unmatched: {r['unmatched_replies']}"
        )
    return lines


def format_report(report: Mapping[str, Any]) -> str:
    lines = head_lines(f"radius benchmark ({report['mode']}) — {report['when']}", report)
    o = report["options"]
    shape = (
        "PAP Access-Request with Message-Authenticator"
        if report["mode"] == AUTH
        else f"session = Start + {o['interims']} x Interim-Update (+{o['step']} octets each) + Stop"
    )
    lines.append(
        f"load: open loop, {shape}, {o['sockets']} UDP sockets (at most {o['sockets'] * 256} outstanding), "
        f"timeout {o['timeout']:g} s, precomputed packets"
    )
    version = report.get("freeradius_version")
    if version:
        lines.append(f"baseline: {version}, stock configuration (-f), users file, detail accounting")
    elif report.get("baseline_error"):
        lines.append(f"baseline: not measured — {report['baseline_error'].splitlines()[0]}")
    for target in ("occ", "freeradius"):
        for name, phase in report.get(target, {}).items():
            lines.extend(_phase_lines(name, phase))
    dropped = (report.get("freeradius_target") or {}).get("dropped_in_log")
    if dropped:
        lines.append(f"  FreeRADIUS logged {dropped} dropped requests")
    lines.append("")
    lines.extend(exit_lines(report))
    lines.extend(_check_lines(report))
    lines.extend(peak_lines(report, ("occ", "freeradius")))
    lines.extend(verdict_lines(report))
    return "\n".join(lines)


def passed(report: Mapping[str, Any]) -> bool:
    """Exit status 0: money conserved (acct; auth: nothing charged), every occ reply as expected, and the
    spawned occ serve exited 0."""
    checks = all((report.get(k) or {}).get("status") == "ok" for k in ("conservation", "replies"))
    return checks and target_healthy(report)
