"""The "steps against quality" view: a metric and wall time against the number of network calls.

For flow-map sampling the budget is N jumps (N network evaluations) on a uniform grid; for the
ODE solvers it is the exact count of velocity evaluations (NFE) of Euler, Heun and adaptive
Dormand-Prince on the same network's diagonal v_{t,t}. The metric is the checkerboard KL (a
coarse 20 x 20 histogram with half a pseudo-count per bin, so that a few thousand samples give
a finite, stable number; its floor is the score of as many exact samples on the same
estimator) or, for other data, the sliced Wasserstein distance to fresh data (its floor is the
distance between two fresh data sets of the same size). The floor is the mean over
:data:`FLOOR_DRAWS` draws, with their standard deviation: at a few hundred samples the floor itself
is noisy, and a model can score a little under one draw of it by chance. A score within
``FLOOR_BAND`` standard deviations of the floor cannot be told from exact samples at that sample
count, and the result's sentence says so.

Wall times are measured on a smaller batch than the metric (:data:`TIMING_BATCH` samples, the
best of :data:`REPEATS` runs after a warm-up, each run at least :data:`MIN_REPEAT_SECONDS` long),
so that timing costs a fraction of the metric run;
the panel's title says so (:data:`TIME_TITLE`).

Results are cached in memory and, for shipped checkpoints, on disk, keyed by the weights' content
(:attr:`app.checkpoints.CheckpointInfo.stamp`) and the evaluation's settings
(:func:`cache_suffix`), so the tab is quick after the first evaluation and a changed evaluation
is never served from an old file.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from app.datasets import DataSource
from app.plots import Curve
from flowmaps.data.toy import sample_toy
from flowmaps.flowmap import FlowMap
from flowmaps.metrics import checkerboard_kl, sliced_wasserstein
from flowmaps.sampling import flowmap_sample, make_grid, ode_solve

log = logging.getLogger(__name__)

FLOW_STEPS = (1, 2, 4, 8, 16, 32, 64)
#: Flow-map budgets of the side-by-side comparison of the shipped models (one evaluation runs
#: :data:`FLOW_STEPS`): the families' contest is at few steps, and N = 32, 64 for four models
#: were two thirds of the comparison's network work.
COMPARE_FLOW_STEPS = (1, 2, 4, 8, 16)
EULER_STEPS = (4, 16, 64)
HEUN_STEPS = (2, 8, 32)
DOPRI_RTOL = (1e-2, 1e-3)
KL_BINS = 20
KL_EPS = 0.5  # pseudo-count per bin: a finite KL even when a bin is empty (few samples, poor model)
#: Attempted steps of one dopri5 solve (about 6 NFE each, so at most about 150 NFE): a solve
#: that needs more is left out of the plot, and the summary says so.
DOPRI_MAX_STEPS = 24
#: Network evaluations a dopri5 curve (both tolerances) is planned at, for the progress line only:
#: on the shipped checkerboard models it took 38 NFE at rtol 1e-2 and 50 to 68 at 1e-3
#: (docs/app_latency.md).
DOPRI_NFE_GUESS = 100
#: Wall times are the best of this many timed repeats, after one untimed warm-up call per model.
REPEATS = 3
#: Samples per timed repeat; the wall times are in ms per this many samples (not rescaled).
TIMING_BATCH = 250
#: A timed repeat lasts at least this long: a sampler faster than that is called several times
#: in a row within one repeat and its mean taken. On 250 samples a 1-step flow map takes a few ms,
#: so a single call is at the mercy of one scheduler slice on a shared CPU (the shipped
#: comparison's timing panel zig-zagged by 5x between N = 1, 2 and 4 under load); 50 ms spans many.
MIN_REPEAT_SECONDS = 0.05
#: Bump when the evaluation changes in a way its settings below do not show (cache files then
#: stop being read).
EVAL_VERSION = 3
#: The floor is the mean over this many draws of exact samples (or of pairs of fresh data sets).
FLOOR_DRAWS = 8
#: Scores within this many standard deviations of the floor are "at the floor" (the shaded band).
FLOOR_BAND = 2.0
#: What a sentence says of scores closer than the tie gap (:func:`tie_gap`), here and in the race.
TIE_WORDS = f"a tie, closer than {FLOOR_BAND:g} sd of the floor"

#: Title of the wall-time panel: how its numbers were taken.
#: (two lines: one line of it overflowed the panel at the page's width).
TIME_TITLE = (
    f"wall time per {TIMING_BATCH} samples (ms)<br>best of {REPEATS} runs of at least "
    f"{1000 * MIN_REPEAT_SECONDS:g} ms, after a warm-up"
)

LESSON = (
    "**The lesson.** One network serves every number of steps. A flow map reaches in 1 to 4 jumps "
    "what an ODE solver needs tens of evaluations for (on the same network's velocity when one model "
    "is evaluated; on the flow-matching model's in the comparison of the shipped models), and its time "
    "grows with its steps, so the left plot is also a speed plot (the right plot: the best "
    f"of {REPEATS} timed runs of {TIMING_BATCH} samples each, after a warm-up run of each model; a sampler "
    f"faster than {1000 * MIN_REPEAT_SECONDS:g} ms is repeated within each timed run and its mean taken; other "
    "work on the machine only adds time, so the best run is the closest to the sampler's own cost). "
    "More steps is not "
    "always better: a flow map's error can flatten or even grow past a few steps, because each "
    "jump adds its own small error, while the ODE keeps improving only as its step shrinks. Nor is "
    "a higher-order solver always better on this score: Heun evaluates the velocity at t = 1 itself, "
    "where the network saw only points of the data in training, so for a point still between squares "
    "its velocity is a guess, and a few samples are thrown off the board; Euler's last evaluation is "
    "at t = 1 - h. "
    f"The comparison of the shipped models runs each flow map at N = {COMPARE_FLOW_STEPS[0]} to "
    f"{COMPARE_FLOW_STEPS[-1]}; one model's evaluation goes to N = {FLOW_STEPS[-1]}."
)


def planned_nfe(flow_map: bool, ode: bool, flow_steps: Sequence[int] = FLOW_STEPS) -> int:
    """Network evaluations of one model's :func:`evaluate` on its metric runs (the timed runs take
    about as many again, on fewer samples): the flow map's jumps, Euler's and Heun's (two per step)
    steps, and :data:`DOPRI_NFE_GUESS` for dopri5, whose count is only known once it has run."""
    total = sum(flow_steps) if flow_map else 0
    if ode:
        total += sum(EULER_STEPS) + 2 * sum(HEUN_STEPS) + DOPRI_NFE_GUESS
    return total


def progress_sentence(done: int, planned: int, elapsed: float, cached: bool) -> str:
    """The summary's line while an evaluation computes: network evaluations done of those planned
    (``done`` counts every point's metric run so far), seconds so far and, once a tenth is done, the
    seconds left at the pace so far; ``cached``: the result will be kept for the next press."""
    planned = max(planned, done, 1)
    text = f"_computing: {done:,} of about {planned:,} network evaluations after {elapsed:.0f} s"
    if planned / 10 <= done < planned and elapsed >= 1.0:
        text += f", about {elapsed * (planned - done) / done:.0f} s left at this pace"
    text += "."
    if cached:
        text += " The result is kept: the next press with these settings shows it at once."
    return text + "_"


def cache_suffix(n: int, seed: int, flow_steps: Sequence[int] = FLOW_STEPS) -> str:
    """The part of a cache key that names how a result was computed: sample count, seed, and a
    digest of every setting of the evaluation (budgets, tolerances, metric, timing), so a result
    computed otherwise is never reused."""
    settings = (
        EVAL_VERSION,
        tuple(flow_steps),
        EULER_STEPS,
        HEUN_STEPS,
        DOPRI_RTOL,
        DOPRI_MAX_STEPS,
        KL_BINS,
        KL_EPS,
        FLOOR_DRAWS,
        REPEATS,
        TIMING_BATCH,
        MIN_REPEAT_SECONDS,
    )
    digest = hashlib.sha256(repr(settings).encode()).hexdigest()[:12]
    return f"n{int(n)}-s{int(seed)}-e{digest}"


@dataclass
class QualityResult:
    """Curves of one evaluation, the metric's name and its floor; ``notes``: points left out and why."""

    metric_name: str
    floor: float | None
    curves: list[Curve] = field(default_factory=list)
    n: int = 0
    done: bool = False
    notes: list[str] = field(default_factory=list)
    floor_sd: float | None = None  # standard deviation of the floor over FLOOR_DRAWS draws

    def to_json(self) -> str:
        return json.dumps(
            {
                "metric_name": self.metric_name,
                "floor": self.floor,
                "floor_sd": self.floor_sd,
                "n": self.n,
                "curves": [asdict(c) for c in self.curves],
                "notes": self.notes,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> QualityResult:
        d = json.loads(text)
        return cls(
            metric_name=d["metric_name"],
            floor=d["floor"],
            floor_sd=d.get("floor_sd"),
            n=d["n"],
            done=True,
            curves=[Curve(**c) for c in d["curves"]],
            notes=[str(x) for x in d.get("notes", [])],
        )


class Metric:
    """The quality metric of a data set at a sample size (see the module docstring)."""

    def __init__(self, data: DataSource, n: int, seed: int = 0) -> None:
        self.data = data
        self.n = n
        if data.is_checkerboard:
            self.name = f"checkerboard KL ({KL_BINS}x{KL_BINS} bins, {n} samples)"
            self.ref = None
            draws = [
                self(sample_toy("checkerboard", n, torch.Generator().manual_seed(seed + 303 + k), dtype=torch.float64))
                for k in range(FLOOR_DRAWS)
            ]
        else:
            self.name = f"sliced Wasserstein distance to data ({n} samples)"
            self.ref = data.sample(n, generator=torch.Generator().manual_seed(seed + 101)).double()
            draws = [
                self(data.sample(n, generator=torch.Generator().manual_seed(seed + 202 + k)).double())
                for k in range(FLOOR_DRAWS)
            ]
        self.floor, self.floor_sd = statistics.mean(draws), statistics.stdev(draws)

    def __call__(self, x: torch.Tensor) -> float:
        x = x.detach().double()
        if not torch.isfinite(x).all():
            return math.inf
        if self.ref is None:
            return float(checkerboard_kl(x, bins=KL_BINS, eps=KL_EPS).kl)
        return sliced_wasserstein(x, self.ref, n_projections=256, generator=torch.Generator().manual_seed(7))


def best_seconds(fn, repeats: int = REPEATS, clock=time.perf_counter, min_seconds: float = MIN_REPEAT_SECONDS) -> float:
    """The best (shortest) over ``repeats`` timed runs of the wall time of one call of ``fn`` (seconds,
    read from ``clock``).

    With ``min_seconds`` > 0, one untimed-for-the-result call first measures ``fn``; each timed run
    then calls it ``loops = ceil(min_seconds / that time)`` times in a row (at most 1000) and
    counts the mean of those calls, so that no timed run is shorter than about ``min_seconds``.
    With ``min_seconds`` = 0 every timed run is one call.

    Raises:
        ValueError: ``repeats`` < 1 or ``min_seconds`` < 0.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1; got {repeats}")
    if min_seconds < 0:
        raise ValueError(f"min_seconds must be at least 0; got {min_seconds}")
    times = []
    with torch.no_grad():  # here, not around the caller's loop: a generator must not yield inside no_grad
        loops = 1
        if min_seconds > 0:
            t = clock()
            fn()
            once = clock() - t
            loops = min(1000, max(1, math.ceil(min_seconds / max(once, 1e-9))))
        for _ in range(repeats):
            t = clock()
            for _ in range(loops):
                fn()
            times.append((clock() - t) / loops)
    # the best run, as timeit advises: other work on a shared machine only ever adds time
    return float(min(times))


def evaluate(
    model: FlowMap,
    data: DataSource,
    label: str,
    n: int = 3000,
    seed: int = 0,
    flow_map: bool = True,
    ode: bool = True,
    result: QualityResult | None = None,
    metric: Metric | None = None,
    repeats: int = REPEATS,
    clock=time.perf_counter,
    flow_steps: Sequence[int] = FLOW_STEPS,
    min_seconds: float = MIN_REPEAT_SECONDS,
) -> Iterator[QualityResult]:
    """Fill a :class:`QualityResult` point by point, yielding it after each new point.

    Each point's metric comes from one run on ``n`` samples (start points drawn with ``seed``);
    its wall time (``Curve.ms``, ms per :data:`TIMING_BATCH` samples) is the best of ``repeats``
    runs of the same sampler on the first :data:`TIMING_BATCH` of those start points, read from
    ``clock`` (seconds; each run at least ``min_seconds`` long, see :func:`best_seconds`), after
    one untimed warm-up run of the model (the first model evaluated
    would otherwise pay one-time costs). ``Curve.timed_nfe`` is the NFE of the timed runs: the
    same as ``Curve.nfe`` except for dopri5, whose steps depend on the batch. Flow maps run at
    ``flow_steps`` jumps on a uniform grid; a dopri5 solve over :data:`DOPRI_MAX_STEPS` steps is
    left out and named in ``notes``.
    """
    metric = metric or Metric(data, n, seed)
    res = result or QualityResult(metric.name, metric.floor, n=n, floor_sd=metric.floor_sd)
    x0 = model.sigma * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    xt = x0[:TIMING_BATCH] if n >= TIMING_BATCH else x0.repeat(-(-TIMING_BATCH // n), 1)[:TIMING_BATCH]

    def point(curve: Curve, run) -> None:
        with torch.no_grad():
            out = run(x0)
        timed = []
        seconds = best_seconds(lambda: timed.append(run(xt).nfe), repeats, clock, min_seconds)
        curve.nfe.append(int(out.nfe))
        curve.metric.append(metric(out.x))
        curve.ms.append(seconds * 1e3)
        curve.timed_nfe.append(int(timed[-1]))

    model = model.eval()
    with torch.no_grad():  # the warm-up run: not timed
        flowmap_sample(model, xt, make_grid("uniform", 2))
    # Grad mode is per thread and a generator runs on the server's worker threads: yielding inside
    # torch.no_grad() would leave gradients off for whatever that thread runs next (a training job).
    if flow_map:
        c = Curve(label, "flow map")
        res.curves.append(c)
        for steps in flow_steps:
            point(c, lambda x, s=steps: flowmap_sample(model, x, make_grid("uniform", s)))
            yield res
    if ode:
        for method, budgets in (("euler", EULER_STEPS), ("heun", HEUN_STEPS)):
            c = Curve(label, method)
            res.curves.append(c)
            for steps in budgets:
                point(c, lambda x, m=method, s=steps: ode_solve(model.velocity, x, method=m, n_steps=s))
                yield res
        c = Curve(label, "dopri5")
        res.curves.append(c)
        for rtol in DOPRI_RTOL:
            try:
                point(
                    c,
                    lambda x, r=rtol: ode_solve(
                        model.velocity, x, method="dopri5", rtol=r, atol=r * 0.1, max_steps=DOPRI_MAX_STEPS
                    ),
                )
            except RuntimeError as err:  # too many steps at this tolerance: the point is left out, and said
                log.info("dopri5 at rtol %g skipped: %s", rtol, err)
                res.notes.append(f"{label}: dopri5 at rtol {rtol:g} left out (more than {DOPRI_MAX_STEPS} steps)")
                continue
            c.settings.append(f"rtol {rtol:g}")
            yield res
    res.done = True
    yield res


def session_prefix(token: int) -> str:
    """The start of every cache key of a live session (see :func:`session_key`)."""
    return f"session-{int(token)}-v"


def session_key(token: int, version: int) -> str:
    """The cache key of a live session's model: its process-unique token (never ``id()``, which is
    reused once a session is freed) and the model's version within the session."""
    return f"{session_prefix(token)}{int(version)}-"


class QualityCache:
    """Results per (model key, n, seed), in memory and optionally on disk."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._mem: dict[str, QualityResult] = {}
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path | None:
        if self.folder is None:
            return None
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)
        if len(safe) > 150:  # file names are limited (255 bytes on most disks): keep a readable head and a digest
            safe = safe[:100] + "-" + hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.folder / f"{safe}.json"

    def get(self, key: str) -> QualityResult | None:
        with self._lock:
            if key in self._mem:
                return self._mem[key]
        path = self._path(key)
        if path is not None and path.is_file():
            try:
                res = QualityResult.from_json(path.read_text())
            except (OSError, ValueError, KeyError, TypeError):
                return None
            with self._lock:
                self._mem[key] = res
            return res
        return None

    def forget(self, prefix: str) -> int:
        """Drop the in-memory results whose key starts with ``prefix`` (a departed session's);
        returns how many. Files on disk (shipped checkpoints only) stay."""
        with self._lock:
            keys = [k for k in self._mem if k.startswith(prefix)]
            for k in keys:
                del self._mem[k]
        return len(keys)

    def put(self, key: str, res: QualityResult, persist: bool) -> None:
        with self._lock:
            self._mem[key] = res
            if len(self._mem) > 256:
                self._mem.pop(next(iter(self._mem)))
        path = self._path(key)
        if persist and path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(res.to_json())
                tmp.replace(path)
            except OSError as err:  # a read-only disk only costs the cache
                log.info("could not write the quality cache %s: %s", path, err)


def winners(table: dict[str, dict[int, float]], within: float = 0.0) -> dict[int, list[str]]:
    """For each N, the models with the lowest finite number, and every model within ``within`` of
    it (a tie: a gap the estimator's noise covers); [] if none is finite. The lowest comes first.

    ``table`` is {model: {N: metric}}, lower is better."""
    out: dict[int, list[str]] = {}
    for n in sorted({n for row in table.values() for n in row}):
        vals = {m: row[n] for m, row in table.items() if n in row and math.isfinite(row[n])}
        best = min(vals.values()) if vals else None
        out[n] = sorted((m for m, v in vals.items() if v <= best + within), key=lambda m: vals[m])
    return out


def comparison_sentence(res: QualityResult, steps: Sequence[int] | None = None) -> str:
    """Who wins at which N, read from the result's own numbers (so it always matches the plot).

    For each N in ``steps`` (default: every N on the plot's flow-map curves), the model whose
    flow-map curve has the lowest metric at N network
    evaluations; then the best ODE figure and its NFE. Empty when fewer than two models have a
    flow-map curve (there is nothing to compare)."""
    table = {c.model: dict(zip(c.nfe, c.metric)) for c in res.curves if c.sampler == "flow map"}
    if len(table) < 2:
        return ""
    parts = []
    # two scores closer than the floor's spread (the estimator's own noise at this sample count,
    # measured on exact samples) are a tie, not a win
    top = floor_top(res)
    best = winners(table, within=tie_gap(res.floor_sd))
    for n in sorted(best) if steps is None else steps:
        if best.get(n):
            who = " and ".join(f"**{m}**" for m in best[n])
            low = table[best[n][0]][n]
            if len(best[n]) > 1:
                scores = ", ".join(f"{table[m][n]:.3f}" for m in best[n])
                who += f" ({scores}: {TIE_WORDS})"
            else:
                who += f" ({low:.3f})"
            who += at_floor_note(best[n], [table[m][n] for m in best[n]], top)
            parts.append(f"N = {n}: {who}")
    text = "**Who wins at which N** (lowest " + res.metric_name + "): " + "; ".join(parts) + "."
    odes = [
        (m, nfe, c.model, c.sampler) for c in res.curves if c.sampler != "flow map" for nfe, m in zip(c.nfe, c.metric)
    ]
    if odes:
        best, nfe, who, sampler = min(odes)
        text += f" The best ODE solve here, {sampler} on {who}'s velocity, reaches {best:.3f} with {nfe} evaluations"
        text += ", at the floor." if best <= top else "."
    return text


def summary_sentence(res: QualityResult) -> str:
    """The result in one sentence, shown above the plot: who wins at which N when several models
    are compared (:func:`comparison_sentence`), else this model's flow map at its fewest and most
    steps and its best ODE solve with the evaluations it took, all read from the result's numbers."""
    sentence = comparison_sentence(res)
    if sentence:
        return sentence + _at_floor_sentence(res) + _notes_sentence(res)
    parts = []
    for c in res.curves:
        if c.sampler == "flow map" and c.nfe:
            lo, hi = 0, len(c.nfe) - 1
            parts.append(
                f"**{c.model}**, flow map: {res.metric_name} {c.metric[lo]:.3f} at N = {c.nfe[lo]}, "
                f"{c.metric[hi]:.3f} at N = {c.nfe[hi]}"
            )
    odes = [(m, nfe, c.sampler) for c in res.curves if c.sampler != "flow map" for nfe, m in zip(c.nfe, c.metric)]
    if odes:
        best, nfe, sampler = min(odes)
        at = ", at the floor" if best <= floor_top(res) else ""
        parts.append(f"best ODE solve: {sampler}, {best:.3f} with {nfe} evaluations" + at)
    if not parts:
        return ""
    floor = f" (floor {floor_text(res)})" if res.floor is not None else ""
    return "; ".join(parts) + floor + "." + _at_floor_sentence(res) + _notes_sentence(res)


def floor_text(res: QualityResult) -> str:
    """The floor as shown: ``0.193 ± 0.012`` (mean ± sd over the draws), or ``0.193`` without a spread."""
    if res.floor is None:
        return ""
    return f"{res.floor:.3f}" + (f" ± {res.floor_sd:.3f}" if res.floor_sd is not None else "")


def at_floor_note(names: Sequence[str], scores: Sequence[float], top: float) -> str:
    """What a sentence adds after a winner or a tie (``names``, with their ``scores``) about the
    floor's band, whose top is ``top``: ", at the floor" when every one lies in it, ", A and B at
    the floor" when only some do (a tie can reach above the band), "" when none does."""
    at = [m for m, v in zip(names, scores) if v <= top]
    if not at:
        return ""
    return ", at the floor" if len(at) == len(names) else f", {' and '.join(at)} at the floor"


def tie_gap(floor_sd: float | None) -> float:
    """The gap under which two scores are a tie: FLOOR_BAND floor sds, the estimator's own noise at
    this sample count (0 without a spread: only equal scores tie). Used by this tab and the race."""
    return FLOOR_BAND * floor_sd if floor_sd is not None else 0.0


def band_top(floor: float | None, floor_sd: float | None) -> float:
    """The top of the floor's band (its mean plus FLOOR_BAND sd): a score at or under it is "at the
    floor"; -inf without a floor or a spread (nothing is called so). Used by this tab and the race."""
    if floor is None or floor_sd is None:
        return -math.inf
    return floor + tie_gap(floor_sd)


def floor_top(res: QualityResult) -> float:
    """:func:`band_top` of a result's floor."""
    return band_top(res.floor, res.floor_sd)


def _at_floor_sentence(res: QualityResult) -> str:
    """A warning when some score lies within FLOOR_BAND sd of the floor (or under it): at this sample
    count the estimator cannot tell those samples from exact ones, so their order means nothing."""
    top = floor_top(res)
    at = [m for c in res.curves for m in c.metric if math.isfinite(m) and m <= top]
    if not at:
        return ""
    verb = "lies" if len(at) == 1 else "lie"
    return (
        f" {len(at)} of the scores {verb} at the floor (at or under {top:.4f}, its mean plus {FLOOR_BAND:g} sd of"
        f" {FLOOR_DRAWS} draws of exact samples): at {res.n} samples these cannot be told from exact samples"
        " or from each other (a score under the floor's mean is the estimator's noise, not a model better"
        " than exact samples); raise Samples per point to separate them."
    )


#: A timed run this much faster than the one before it on the same curve, with more network
#: evaluations, is out of order: other work slowed the slower one (1 - this = the tolerance).
TIME_ORDER_SLACK = 0.8


def timing_sentence(res: QualityResult) -> str:
    """A warning when a curve's wall times are out of the order of its evaluations: with more NFE
    than the point before it, a point took under :data:`TIME_ORDER_SLACK` of its time. On a busy
    machine even the best of the timed runs can be slowed (a fresh user saw a flow map's N = 8
    timed at 28 ms after 46 ms at N = 4), and the lesson reads the right plot as a speed plot."""
    for c in res.curves:  # time_nfe: the NFE the times were taken at (dopri5's differ on the timing batch)
        for i in range(1, len(c.ms)):
            if c.time_nfe[i] > c.time_nfe[i - 1] and c.ms[i] < TIME_ORDER_SLACK * c.ms[i - 1]:
                return (
                    f" The wall times are out of order ({c.model}, {c.sampler}: {c.ms[i - 1]:.1f} ms at "
                    f"{c.time_nfe[i - 1]} NFE, {c.ms[i]:.1f} ms at {c.time_nfe[i]}): other work on this machine "
                    "slowed some timed runs, so read the right plot with care."
                )
    return ""


def _notes_sentence(res: QualityResult) -> str:
    return timing_sentence(res) + ((" " + "; ".join(res.notes) + ".") if res.notes else "")


def table_markdown(res: QualityResult) -> str:
    """The numbers of a result as a Markdown table (one row per curve and budget); the sentence
    that reads them is :func:`summary_sentence`, shown above the plot. A timed run whose NFE
    differs from the metric run's (dopri5 on the smaller timing batch) says its own."""
    lines = [
        f"| model | sampler | NFE | metric | ms / {TIMING_BATCH} samples (best of {REPEATS}) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in res.curves:
        settings = c.settings if len(c.settings) == len(c.nfe) else [""] * len(c.nfe)
        for nfe, m, ms, tn, setting in zip(c.nfe, c.metric, c.ms, c.time_nfe, settings):
            ms_text = (
                f"{ms:.1f}" if tn == nfe else f"{ms:.1f} (on the {TIMING_BATCH} timed samples the solve took {tn} NFE)"
            )
            sampler = f"{c.sampler}, {setting}" if setting else c.sampler
            lines.append(f"| {c.model} | {sampler} | {nfe} | {m:.4f} | {ms_text} |")
    if res.floor is not None:
        spread = f" ± {res.floor_sd:.4f} (mean ± sd over {FLOOR_DRAWS} draws)" if res.floor_sd is not None else ""
        lines.append(f"\nFloor (exact samples, same estimator): **{res.floor:.4f}**{spread}.")
    if res.notes:
        lines.append("\nLeft out: " + "; ".join(res.notes) + ".")
    return "\n".join(lines)
