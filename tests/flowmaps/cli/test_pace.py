"""The duration estimate of `flowmaps train` (flowmaps.cli.pace.StepClock) on made-up step times.

Each test drives the clock with a fake time source: the step times are chosen, so the right pace is
known exactly, and nothing depends on how fast this machine is.
"""

from __future__ import annotations

import re

import pytest

from flowmaps.cli.pace import CHANGE, MIN_SECONDS, MIN_STEPS, WARMUP_STEPS, StepClock, fmt_duration


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _run(step_seconds: list[float], steps: int | None = None, max_seconds: float | None = None, start: int = 0):
    """Feed the clock one tick per step, the k-th step taking step_seconds[k]; returns [(step, line)]."""
    fake = FakeClock()
    clock = StepClock(start, steps or start + len(step_seconds), max_seconds, clock=fake, wall_clock=lambda: 0.0)
    lines = []
    for k, dt in enumerate(step_seconds):
        fake.now += dt
        line = clock.tick(start + k + 1)
        if line is not None:
            lines.append((start + k + 1, line))
    return lines


def _ms(line: str) -> float:
    return float(re.search(r"([\d.]+) ms per step", line).group(1))


def test_slow_first_steps_stay_out_of_the_estimate():
    """Steps 1-10 pay one-time costs (0.5 s, then 0.1 s: past the two warm-up steps); the run then goes
    at 20 ms a step. The first estimate is the steady 20 ms, not an average with the slow start (timing
    steps 3-22 alone, as `train` once did, gives 92 ms)."""
    times = [0.5] * 4 + [0.1] * 6 + [0.02] * 2020
    lines = _run(times)
    assert lines, "no estimate"
    step, first = lines[0]
    assert first.startswith("duration estimate:")
    assert _ms(first) == pytest.approx(20.0, abs=0.05)
    left = 2030 - step
    assert f"for the {left} steps left" in first and f"about {fmt_duration(0.02 * left)}" in first
    assert len(lines) == 1  # a steady pace prints no update


def test_no_estimate_from_a_split_second():
    """At 5 ms a step, 20 steps are 0.1 s: too little to judge a pace by. The estimate waits for
    MIN_SECONDS of timed steps and comes once the pace has been seen for that long."""
    lines = _run([0.005] * 3000)
    step, line = lines[0]
    assert (step - WARMUP_STEPS) * 0.005 == pytest.approx(MIN_SECONDS, abs=0.006)
    assert _ms(line) == pytest.approx(5.0, abs=0.05)


def test_slow_steps_estimate_after_min_steps():
    """At 1 s a step, MIN_SECONDS passes long before MIN_STEPS: the estimate comes after the steps."""
    lines = _run([3.0] * 2 + [1.0] * 60)
    step, line = lines[0]
    assert step == WARMUP_STEPS + MIN_STEPS
    assert _ms(line) == pytest.approx(1000.0, abs=0.05)


def _timed(line: str) -> tuple[int, int]:
    first, last = re.search(r"timed over steps (\d+)-(\d+)", line).groups()
    return int(first) - 1, int(last)


def test_a_load_that_stays_updates_the_line_and_a_burst_does_not():
    """20 ms a step for 10 s, then 60 ms for good (the machine got busy): updated lines follow, each
    with the exact average pace over the steps it names. A 3 s burst at 60 ms in a steady run, or a
    10 % change (under CHANGE), prints nothing more."""
    times = [0.02] * 500 + [0.06] * 3000
    lines = _run(times)
    assert _ms(lines[0][1]) == pytest.approx(20.0, abs=0.05)
    assert len(lines) >= 3 and "was 20.0" in lines[1][1]
    for _, line in lines[1:]:
        assert line.startswith("duration estimate, updated:")
        first, last = _timed(line)
        assert _ms(line) == pytest.approx(1000 * sum(times[first:last]) / (last - first), abs=0.05)
    assert _ms(lines[-1][1]) > 50.0
    assert len(_run([0.02] * 500 + [0.06] * 50 + [0.02] * 3000)) == 1
    assert 0.1 < CHANGE
    assert len(_run([0.02] * 500 + [0.022] * 3000)) == 1


def test_resumed_run_and_time_cap():
    """A run resumed at step 5000 times its own steps; with --max-seconds the time left is the cap's."""
    lines = _run([0.01] * 1000, steps=10_000, start=5000, max_seconds=20.0)
    step, line = lines[0]
    assert step > 5000 + WARMUP_STEPS + MIN_STEPS
    assert _ms(line) == pytest.approx(10.0, abs=0.05)
    left = 20.0 - (step - 5000) * 0.01
    assert f"about {fmt_duration(left)}" in line
    assert f"cut by --max-seconds at about step {step + int(round(left / 0.01, 6))}" in line


def test_a_rollback_restarts_the_timing():
    """The drift guard can send the step back: the steps between are not counted twice."""
    fake = FakeClock()
    clock = StepClock(0, 5000, None, clock=fake, wall_clock=lambda: 0.0)
    step, lines = 0, []
    for k in range(1200):
        fake.now += 0.01
        step = step + 1 if k != 300 else 100  # back to step 100 at the 301st tick
        if (line := clock.tick(step)) is not None:
            lines.append(line)
    assert lines and all(_ms(line) == pytest.approx(10.0, abs=0.05) for line in lines)


def test_short_run_prints_nothing():
    assert _run([0.01] * (WARMUP_STEPS + MIN_STEPS)) == []


def test_the_line_names_what_follows_the_training():
    """The estimate times the training only: the evaluation that follows is named as not in it."""
    from flowmaps.cli import build_parser
    from flowmaps.cli.train_run import _evaluation_text

    args = build_parser().parse_args(["train", "--data", "checkerboard", "--out", "x", "--eval-steps", "1,4"])
    args.eval_n = 2000
    after = _evaluation_text(args)
    assert "not in this estimate" in after and "2000 samples at N = 1,4" in after and "progress bar" in after
    fake = FakeClock()
    clock = StepClock(0, 1000, None, clock=fake, wall_clock=lambda: 0.0, after=after)
    lines = []
    for k in range(400):
        fake.now += 0.02
        if (line := clock.tick(k + 1)) is not None:
            lines.append(line)
    assert lines and lines[0].endswith(f"; then {after}") and "plus the evaluation" not in lines[0]
    args.eval_n = 0
    assert _evaluation_text(args) == ""
