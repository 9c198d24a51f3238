"""The peak search both benchmarks share: a target that kept up with a phase was not at its peak."""

from __future__ import annotations

from dataclasses import dataclass

from occ.bench_common import PEAK_RAISES, kept_up, peak_and_share, peak_lines, search_peak


@dataclass
class FakePhase:
    name: str
    rate: float
    answered: float

    def kept_up(self) -> bool:
        return kept_up(self.rate, self.answered, 0, int(self.rate))


def test_kept_up_needs_nearly_every_request_answered_and_next_to_none_missed() -> None:
    assert kept_up(1000.0, 990.0, 0, 10_000)
    assert not kept_up(1000.0, 900.0, 0, 10_000)
    assert kept_up(40_000.0, 39_990.0, 12, 400_000)  # a dozen datagrams lost of 400,000: it kept up
    assert not kept_up(1000.0, 1000.0, 11, 10_000)  # skipped or unanswered requests: it fell behind


async def test_the_peak_phase_runs_again_at_twice_the_rate_until_the_target_falls_behind() -> None:
    offered: list[float] = []
    labels: list[str] = []

    async def run(rate: float, label: str) -> FakePhase:
        offered.append(rate)
        labels.append(label)
        return FakePhase(f"occ-{label}", rate, min(rate, 3000.0))  # capacity: 3000/s

    said: list[str] = []
    phases = await search_peak(run, 1000.0, FakePhase.kept_up, said.append, "occ")
    assert offered == [1000.0, 2000.0, 4000.0]
    assert labels == ["peak", "peak-2", "peak-3"]  # each attempt's load has its own session ids
    assert [p.name for p in phases] == ["occ-below-peak-1", "occ-below-peak-2", "occ-peak"]
    assert len(said) == 2 and "4,000" in said[-1]
    share = FakePhase("occ-80%", 2400.0, 2400.0)
    assert peak_and_share([*phases, share]) == (phases[-1], share)
    assert peak_and_share(phases[-1:]) == (phases[-1], None)


async def test_the_search_is_bounded_and_a_peak_never_reached_is_reported_as_a_lower_bound() -> None:
    async def run(rate: float, label: str) -> FakePhase:
        return FakePhase(f"occ-{label}", rate, rate)  # keeps up with anything

    phases = await search_peak(run, 1000.0, FakePhase.kept_up, lambda _: None, "occ")
    assert len(phases) == PEAK_RAISES + 1 and phases[-1].rate == 1000.0 * 2**PEAK_RAISES
    report = {"occ": {"occ-peak": {"kept_up": True}}, "baseline": {"baseline-peak": {"kept_up": False}}}
    (line,) = peak_lines(report, ("occ", "baseline"))
    assert line.startswith("NOTE: occ kept up") and "lower bound" in line


async def test_a_target_at_capacity_gets_one_peak_phase() -> None:
    async def run(rate: float, label: str) -> FakePhase:
        return FakePhase(f"baseline-{label}", rate, rate / 3)

    phases = await search_peak(run, 2000.0, FakePhase.kept_up, lambda _: None, "baseline")
    assert [p.name for p in phases] == ["baseline-peak"]
