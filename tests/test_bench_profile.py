"""benchmarks/bench_profile.py, the timers of ``bench.py --only profile``: exclusive time, tolerant names."""

import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)
try:
    import bench
    import bench_profile
finally:
    # benchmarks/ holds minigrid.py: left on sys.path for the session, it shadowed the minigrid package and
    # test_minigrid.py, collected after this module, was skipped ("needs the minigrid package") in CI.
    sys.path.remove(BENCHMARKS)


class Clock:
    """A perf_counter the test moves by hand: the timings are exact, nothing sleeps."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def run_tree(timers, clock, tree):
    """Calls ``(row, before, children, after, inclusive)``: ``before`` s of own work, the children, ``after`` s."""
    row, before, children, after, inclusive = tree

    def body():
        clock.t += before
        for child in children:
            run_tree(timers, clock, child)
        clock.t += after

    timers.wrap(body, row, row, inclusive=inclusive)()


@pytest.mark.parametrize("tree, expected", [
    # one call: all its time
    (("A", 3.0, [], 0.0, False), {"A": 3.0}),
    # nested rows: each its own (exclusive) time, not the outer one's inclusive 7 s
    (("A", 1.0, [("B", 2.0, [], 0.0, False)], 4.0, False), {"A": 5.0, "B": 2.0}),
    # three deep, and two children: the middle one's time excludes its own child
    (("A", 1.0, [("B", 1.0, [("C", 3.0, [], 0.0, False)], 1.0, False), ("C", 0.5, [], 0.0, False)], 0.0, False),
     {"A": 1.0, "B": 2.0, "C": 3.5}),
    # the same row nested in itself: counted once
    (("A", 1.0, [("A", 2.0, [], 0.0, False)], 0.0, False), {"A": 3.0}),
    # an inclusive row (the final evaluation) takes everything inside it
    (("E", 1.0, [("B", 2.0, [("C", 1.0, [], 0.0, False)], 0.0, False)], 1.0, True), {"E": 5.0}),
])
def test_rows_get_exclusive_time_and_sum_to_the_wall_time(tree, expected):
    clock = Clock()
    timers = bench_profile.Timers(clock=clock)
    run_tree(timers, clock, tree)
    assert dict(timers.seconds) == expected
    assert sum(timers.seconds.values()) == clock.t  # nothing counted twice, nothing lost
    assert timers.stack == [clock.t] and timers.absorbing == 0


class Sample:
    def method(self, x):
        return x + 1

    @staticmethod
    def static(x):
        return 2 * x


def test_missing_names_are_reported_not_fatal_and_instrument_is_undone():
    here = __name__
    rows = {f"{here}.Sample.method": "r", f"{here}.Sample.static": "r", f"{here}.Sample.renamed": "r",
            "no_such_module_of_keras_trpo.step": "r"}
    original = Sample.method
    timers = bench_profile.Timers()
    missing = bench_profile.instrument(timers, rows)
    try:
        assert set(missing) == {f"{here}.Sample.renamed", "no_such_module_of_keras_trpo.step"}
        assert all(why.startswith("not instrumented") for why in missing.values())
        assert Sample().method(1) == 2 and Sample().static(3) == 6 and Sample.static(3) == 6  # still a staticmethod
        assert timers.calls == {f"{here}.Sample.method": 1, f"{here}.Sample.static": 2}
    finally:
        bench_profile.restore(timers)
    assert Sample.method is original and isinstance(vars(Sample)["static"], staticmethod)


def test_profile_steps_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--only", "profile", "--profile-steps", "0"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--profile-steps" in err and "got 0" in err and "--profile-steps 100000" in err
