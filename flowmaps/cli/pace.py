"""The duration estimate that ``flowmaps train`` prints: a step's pace and the time the run has left.

A run's first steps pay one-time costs (allocations, the first kernels), and on a machine shared
with other work the pace moves with the load over a second or two: a handful of steps says little.
So the estimate skips :data:`WARMUP_STEPS` steps, then waits for at least :data:`MIN_STEPS` steps
and :data:`MIN_SECONDS` seconds, and takes the pace of the later half of that time only (whatever
the first steps still paid stays out). Later it takes the average pace since the start of that half,
looking again each time the timed seconds double, and prints an updated line when that average has
moved by more than :data:`CHANGE` from the last line printed: a load that stays changes the line, a
burst of a few seconds does not (the progress bar's time left follows the last few seconds). The
pace is wall-clock seconds between the ends of consecutive steps, so it includes what runs between
steps in the real run too (callbacks, logs, periodic writes).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable

__all__ = ["CHANGE", "MIN_SECONDS", "MIN_STEPS", "WARMUP_STEPS", "StepClock", "fmt_duration"]

WARMUP_STEPS = 2
"""Steps not timed at all (the clock starts at the end of the last of them)."""
MIN_STEPS = 20
"""Timed steps before the first estimate."""
MIN_SECONDS = 4.0
"""Timed seconds before the first estimate (the quick 2-D preset runs about 10-30 ms a step)."""
CHANGE = 0.25
"""Relative change of the pace that prints an updated estimate."""


def fmt_duration(seconds: float) -> str:
    """Seconds as "42 s", "3.5 min" or "1.2 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class StepClock:
    """Turns the times at which steps end into the lines of the duration estimate.

    Args:
        start_step: the trainer's step when the run starts (a resumed run starts above 0).
        steps: the step the run ends at. max_seconds: the run's time cap in seconds, or None.
        clock: seconds, monotonic (``time.perf_counter``; a test passes its own).
        wall_clock: seconds since the epoch, for the "done near" time of day.
        after: what runs after the training (``train`` names its evaluation), added to each line
            after "then"; empty: nothing.
    """

    def __init__(
        self,
        start_step: int,
        steps: int,
        max_seconds: float | None,
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
        after: str = "",
    ) -> None:
        self.after = after  # what follows the training (the evaluation), named at each line's end
        self.warm = start_step + WARMUP_STEPS
        self.steps, self.max_seconds = steps, max_seconds
        self.clock, self.wall_clock = clock, wall_clock
        self.run_start = clock()
        self.mark_steps: list[int] = []  # sparse marks (step, time) from the end of the warm-up on
        self.mark_times: list[float] = []
        self.next_look = MIN_SECONDS
        self.origin: int | None = None  # the mark the pace is timed from, once the first line is out
        self.printed: float | None = None  # seconds per step of the last line printed

    def tick(self, step: int) -> str | None:
        """Call after each step with the trainer's step; returns a line to print, or None."""
        now = self.clock()
        if step < self.warm:
            return None
        if not self.mark_steps or step < self.mark_steps[-1]:  # the start, or a rollback of the guard
            self.mark_steps, self.mark_times = [step], [now]
            self.next_look, self.origin = MIN_SECONDS, None
            return None
        timed = now - self.mark_times[0]
        # Marks 1 % of the timed time apart are enough to find the later half, and stay few.
        if self.origin is None and step > self.mark_steps[-1] and now - self.mark_times[-1] >= 0.01 * timed:
            self.mark_steps.append(step)
            self.mark_times.append(now)
        if step - self.mark_steps[0] < MIN_STEPS or timed < self.next_look or step >= self.steps:
            return None
        self.next_look = 2 * timed
        i = self.origin
        if i is None:  # the first look: the later half
            i = bisect.bisect_right(self.mark_times, self.mark_times[0] + timed / 2) - 1
            if self.mark_steps[i] >= step:  # only when the half has no mark of its own
                i = 0
            self.origin = i
        pace = (now - self.mark_times[i]) / (step - self.mark_steps[i])
        if self.printed is not None and abs(pace / self.printed - 1) <= CHANGE:
            return None
        line = self._line(step, self.mark_steps[i], pace, now)
        self.printed = pace
        return line

    def _line(self, step: int, first: int, pace: float, now: float) -> str:
        left = pace * (self.steps - step)
        capped = ""
        if self.max_seconds is not None and now - self.run_start + left > self.max_seconds:
            left = max(0.0, self.max_seconds - (now - self.run_start))
            capped = f", cut by --max-seconds at about step {step + int(left / pace)}"
        finish = time.strftime("%H:%M", time.localtime(self.wall_clock() + left))
        head = "duration estimate:" if self.printed is None else "duration estimate, updated:"
        was = "" if self.printed is None else f", was {1000 * self.printed:.1f}"
        return (
            f"{head} {1000 * pace:.1f} ms per step (timed over steps {first + 1}-{step}{was}), "
            f"so about {fmt_duration(left)} for the {self.steps - step} steps left{capped} (done near {finish})"
            + (f"; then {self.after}" if self.after else "")
        )
