"""The timing loop against fake cases whose cost depends on what ran just before them (a runtime that
still holds the cores, or caches another case filled): the ratio it reports must be each case's own
cost, whichever order the cases are named in. Timed on a fake clock, so nothing here depends on the machine."""

from __future__ import annotations

import pytest

from psdeploy.bench.stats import load_modes, ratio_spread
from psdeploy.bench.timing import TimingPlan, run_interleaved

PLAN = TimingPlan(warmup=2, max_warmup=2, iterations=40)


class FakeMachine:
    """A clock that each case's run advances by its own cost, plus ``tail`` when the run before it was another
    case's and that case leaves a tail (a spinning thread pool that still holds the cores)."""

    def __init__(self, cost: dict[str, float], tail: dict[str, float]) -> None:
        self.cost, self.tail, self.now, self.last = cost, tail, 0.0, None
        self.order: list[str] = []

    def clock(self) -> float:
        return self.now

    def case(self, name: str):
        def run() -> None:
            after_other = self.last is not None and self.last != name
            self.now += self.cost[name] + (self.tail.get(self.last, 0.0) if after_other else 0.0)
            self.last = name
            self.order.append(name)
        return run


def _ratio(names: list[str], cost: dict[str, float], tail: dict[str, float]) -> float:
    """The second case's latency over the first's, as the timing loop reports it."""
    machine = FakeMachine(cost, tail)
    timed = run_interleaved({n: machine.case(n) for n in names}, PLAN, clock=machine.clock)
    return ratio_spread(timed[names[1]].rounds_ms, timed[names[0]].rounds_ms)[0]


@pytest.mark.parametrize("tail", [{"a": 0.004}, {"b": 0.004}, {"a": 0.004, "b": 0.002}])
def test_a_case_does_not_pay_for_the_one_before_it(tail: dict[str, float]) -> None:
    cost = {"a": 0.010, "b": 0.011}  # b is 1.1x a when each runs after itself
    assert _ratio(["a", "b"], cost, tail) == pytest.approx(1.1)
    assert _ratio(["b", "a"], cost, tail) == pytest.approx(1 / 1.1)


def test_each_timed_run_follows_its_own_case_and_the_order_rotates() -> None:
    machine = FakeMachine({n: 0.001 for n in "abc"}, {})
    run_interleaved({n: machine.case(n) for n in "abc"}, TimingPlan(warmup=1, max_warmup=1, iterations=3, block=2),
                    clock=machine.clock)
    assert "".join(machine.order[3:]) == "aaabbbccc" + "bbbcccaaa" + "cccaaabbb"


def test_every_round_gives_each_case_one_figure_and_block_samples() -> None:
    machine = FakeMachine({"a": 0.001, "b": 0.002}, {})
    timed = run_interleaved({n: machine.case(n) for n in "ab"}, TimingPlan(warmup=1, max_warmup=1, iterations=5,
                                                                            block=3), clock=machine.clock)
    assert [len(timed[n].rounds_ms) for n in "ab"] == [5, 5]
    assert [len(timed[n].samples_ms) for n in "ab"] == [15, 15]
    assert timed["b"].stats.median_ms == pytest.approx(2.0)


def test_loads_at_two_speeds_are_two_modes() -> None:
    modes = load_modes([40.0, 46.2, 39.5, 46.0, 40.3])
    assert [(round(m.median_ms, 1), m.loads) for m in modes] == [(40.0, 3), (46.1, 2)]
    assert len(load_modes([40.0, 40.8, 41.5, 42.3])) == 1  # drift in small steps is one mode
