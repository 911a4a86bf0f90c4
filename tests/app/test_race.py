"""The "Race the families" view (app/race.py): equal budgets, the winner sentence read from the
table, a short real race through the page's handler, and Stop.

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter

import numpy as np
import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app.config import Limits
from app.datasets import toy_source
from app.live import LiveSession
from app.race import (
    KL_EPS,
    RACE_LABELS,
    RACE_METHODS,
    RACE_STEPS,
    Race,
    RaceSnapshot,
    parse_methods,
    round_robin,
    table_markdown,
    winner_sentence,
    winners,
)
from app.sessions import Sessions
from app.tabs.race import RaceHandlers
from app.validation import InputError, TrainSettings

#: A tiny network and batch: a race of a few dozen steps per family takes a second or two.
TINY = TrainSettings(method="lsd", steps=30, batch=64, lr=1e-2, eta=0.5, width=16, depth=2, seed=3)
ALL = list(RACE_LABELS.values())


def handlers(live_seconds: float = 20.0) -> RaceHandlers:
    limits = Limits(live_seconds=live_seconds, session_seconds=200.0)
    return RaceHandlers(limits, Sessions(max_live=4, idle_seconds=60.0))


def parse_table(markdown: str) -> dict[str, dict[int, float]]:
    """The numbers of the page's table, read back from its Markdown (bold marks removed)."""
    out: dict[str, dict[int, float]] = {}
    names = {v: k for k, v in RACE_LABELS.items()}
    for line in markdown.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in names:
            out[names[cells[0]]] = {n: float(v) for n, v in zip(RACE_STEPS, cells[2:], strict=True)}
    return out


# ------------------------------------------------------------------------------ equal budgets
@pytest.mark.parametrize("steps, chunk", [(100, 20), (103, 20), (7, 20), (1, 1)])
def test_round_robin_gives_each_family_the_same_steps(steps, chunk):
    methods = ("lsd", "esd", "psd-m", "fm")
    items = list(round_robin(methods, steps, chunk))
    totals = Counter()
    for m, k in items:
        totals[m] += k
    assert dict(totals) == {m: steps for m in methods}
    # interleaved: after every full round all methods have the same count
    running = Counter()
    for i, (m, k) in enumerate(items):
        running[m] += k
        assert items[i][0] == methods[i % len(methods)]
        if i % len(methods) == len(methods) - 1:
            assert len(set(running.values())) == 1


def test_race_trains_every_family_the_same_steps_from_the_same_weights(one_thread):
    data = toy_source("two_moons")
    race = Race(data, RACE_METHODS, TINY, eval_points=500)
    first = {m: next(race.trainers[m].model.parameters()).detach().clone() for m in RACE_METHODS}
    for m in RACE_METHODS[1:]:
        torch.testing.assert_close(first[m], first["lsd"], rtol=0, atol=0)  # same seed: same initial weights
    snaps = list(race.run(threading.Event(), max_seconds=300.0, chunk=7))
    assert snaps[0].state == "starting" and snaps[-1].state == "done"
    assert {m: race.trainers[m].global_step for m in RACE_METHODS} == {m: TINY.steps for m in RACE_METHODS}
    assert snaps[-1].steps == {m: TINY.steps for m in RACE_METHODS}


# ------------------------------------------------------------------------------ the winner sentence
def test_winner_sentence_reads_the_table():
    table = {
        "lsd": {1: 0.40, 2: 0.31, 4: 0.50, 8: 0.90},
        "esd": {1: 0.45, 2: 0.30, 4: 0.52, 8: float("inf")},
        "psd-m": {1: 0.41, 2: 0.35, 4: 0.29, 8: 0.27},
        "fm": {1: 1.70, 2: 1.10, 4: 0.33, 8: 0.27},
    }
    steps = {m: 500 for m in table}
    assert winners(table) == {1: ["lsd"], 2: ["esd"], 4: ["psd-m"], 8: ["psd-m", "fm"]}
    text = winner_sentence(table, "KL", steps, floor=0.228)
    assert "after 500 steps each" in text and "0.228" in text
    assert "N = 1: LSD (KL 0.400)" in text
    assert "N = 2: ESD (KL 0.300)" in text
    assert "N = 4: PSD-M (KL 0.290)" in text
    assert "N = 8: PSD-M and FM (KL 0.270)" in text  # a tie names both


def test_a_race_far_from_the_floor_is_said_to_be_early():
    """A fresh user stopped a race at 360 steps, every family at KL 0.78-0.86 against a floor of
    0.225, and read winners and ties: when even the lowest score is over EARLY_FACTOR times the
    floor, the sentence says the race ranks how fast the families learn, not where they end."""
    from app.race import EARLY_FACTOR

    early = {"lsd": {1: 0.785, 8: 0.70}, "psd-m": {1: 0.779, 8: 0.72}, "fm": {1: 1.9, 8: float("inf")}}
    text = winner_sentence(early, "KL", {m: 360 for m in early}, floor=0.225, floor_sd=0.005)
    assert 0.70 > EARLY_FACTOR * 0.225  # the premise
    assert "the lowest score, 0.700, is 3.1 times the floor" in text and "not where it ends" in text
    late = {"lsd": {1: 0.30, 8: 0.24}, "psd-m": {1: 0.33, 8: 0.26}}
    assert "far from exact samples" not in winner_sentence(late, "KL", {m: 8000 for m in late}, floor=0.225)
    assert "far from exact samples" not in winner_sentence(early, "KL", {m: 360 for m in early})  # no floor


def test_families_closer_than_the_floors_spread_are_a_tie_and_the_floor_is_marked():
    """A fresh user saw "N = 1: LSD (KL 0.807)" against ESD 0.814 and PSD-M 0.821, one seed each,
    where the floor's own spread over draws of exact samples is larger than those gaps. Scores within
    FLOOR_BAND floor sds of the lowest are named together as a tie, bold together in the table, and
    a tied family inside the floor's band is said to be at the floor, alone if the others are not."""
    from app.quality import FLOOR_BAND

    sd = 0.008  # the band's top: 0.228 + 2 x 0.008 = 0.244
    table = {
        "lsd": {1: 0.807, 2: 0.500, 4: 0.250, 8: 0.230},
        "esd": {1: 0.814, 2: 0.600, 4: 0.255, 8: 0.240},
        "psd-m": {1: 0.821, 2: 0.700, 4: 0.300, 8: 0.245},
        "fm": {1: 1.700, 2: 1.100, 4: 0.900, 8: 0.9000},
    }
    assert 0.821 - 0.807 <= FLOOR_BAND * sd < 0.600 - 0.500  # the test's premise
    steps = {m: 300 for m in table}
    text = winner_sentence(table, "KL", steps, floor=0.228, floor_sd=sd)
    assert "N = 1: LSD, ESD and PSD-M (KL 0.807, 0.814, 0.821: a tie, closer than 2 sd of the floor)" in text
    assert "N = 2: LSD (KL 0.500)" in text and "N = 2: LSD (KL 0.500)," not in text  # a clear win, above the floor
    # N = 4: LSD and ESD tie, both above the floor's band
    assert "N = 4: LSD and ESD (KL 0.250, 0.255: a tie, closer than 2 sd of the floor);" in text
    # N = 8: LSD (0.230) and ESD (0.240) lie in the floor's band; PSD-M (0.245) ties with LSD but does not
    assert (
        "N = 8: LSD, ESD and PSD-M (KL 0.230, 0.240, 0.245: a tie, closer than 2 sd of the floor), "
        "LSD and ESD at the floor." in text
    )
    assert "exact samples score 0.228 ± 0.0080 over 8 draws" in text and "One training seed each" in text
    snap = RaceSnapshot("done", steps, 300, 10.0, table, 0.228, floor_sd=sd)
    md = table_markdown(snap, "KL")
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "**0.807**" in rows["LSD"] and "**0.814**" in rows["ESD"] and "**0.821**" in rows["PSD-M"]
    assert "**1.700**" not in rows["FM (Euler)"] and "**0.700**" not in rows["PSD-M"]
    assert "0.228 ± 0.0080" in rows["exact samples (floor)"]


def test_the_races_floor_is_the_mean_and_sd_of_draws_of_exact_samples():
    """The race's floor and its spread, against an independent computation from the library's public
    pieces: the KL of FLOOR_DRAWS sets of exact checkerboard samples, their mean and sample sd."""
    from app.quality import FLOOR_DRAWS
    from flowmaps.data.toy import sample_toy
    from flowmaps.metrics import checkerboard_kl

    race = Race(toy_source("checkerboard"), ("lsd",), TINY, eval_points=500)
    draws = [
        float(checkerboard_kl(sample_toy("checkerboard", 500, torch.Generator().manual_seed(k)), eps=KL_EPS).kl)
        for k in range(FLOOR_DRAWS)
    ]
    assert race.floor == pytest.approx(np.mean(draws), rel=1e-9)
    assert race.floor_sd == pytest.approx(np.std(draws, ddof=1), rel=1e-9) and race.floor_sd > 0
    moons = Race(toy_source("two_moons"), ("lsd",), TINY, eval_points=500)
    assert moons.floor > 0 and moons.floor_sd > 0
    *_, last = moons.run(threading.Event(), max_seconds=60.0, chunk=30)
    assert last.floor == moons.floor and last.floor_sd == moons.floor_sd


def test_a_race_of_one_family_gives_its_scores_without_a_winner():
    text = winner_sentence({"lsd": {1: 0.40, 2: float("inf")}}, "KL", {"lsd": 300}, floor=0.228)
    assert text == "LSD's checkerboard KL after 300 steps each; exact samples score 0.228: N = 1: 0.400; N = 2: inf."
    assert "Lowest" not in text


def test_winner_sentence_says_when_steps_differ_and_when_nothing_is_finite():
    table = {"lsd": {1: float("nan"), 2: 0.2}, "fm": {1: float("inf"), 2: 0.1}}
    text = winner_sentence(table, "SW", {"lsd": 40, "fm": 20})
    assert "N = 1: none finished with a finite SW" in text
    assert "N = 2: FM (SW 0.100)" in text
    assert "unequal steps" in text and "LSD 40" in text and "FM 20" in text


def test_a_diverging_family_drops_out_and_the_race_ends(one_thread):
    wild = TrainSettings(**{**TINY.as_dict(), "lr": 1e12, "steps": 200})
    race = Race(toy_source("two_moons"), ("lsd", "fm"), wild, eval_points=300)
    *_, last = race.run(threading.Event(), max_seconds=300.0, chunk=10)
    assert "lsd" in race.diverged and last.diverged == race.diverged
    assert last.state == "done" and last.steps["lsd"] < 200  # the diverged family stopped early
    assert set(last.table) == {"lsd", "fm"}
    text = winner_sentence(last.table, "SW", last.steps, None, last.diverged)
    assert "LSD diverged at step" in text


def test_parse_methods_names_the_field():
    assert parse_methods(["FM (Euler)", "LSD"]) == ("lsd", "fm")
    with pytest.raises(InputError, match="families"):
        parse_methods([])
    with pytest.raises(InputError, match="families"):
        parse_methods(["MeanFlow"])


# ------------------------------------------------------------------------------ through the handler
def test_short_race_through_the_handler(one_thread):
    h = handlers()
    session = LiveSession()
    outs = list(h.start(session, "checkerboard", ALL, 20, 0, chunk=5, settings=TINY))
    fig, table_md, sentence, bar = outs[-1]
    table = parse_table(table_md)
    assert set(table) == set(RACE_METHODS)
    assert all(set(row) == set(RACE_STEPS) for row in table.values())
    assert "exact samples (floor)" in table_md and "Euler" in table_md
    assert sentence.startswith("**done**")
    assert "20 steps each" in sentence and "step 20 of 20" in bar
    # the sentence names, at each N, the family with the lowest number of the table shown and every
    # family tied with it (within FLOOR_BAND sds of the floor row's spread)
    from app.quality import FLOOR_BAND

    floor_sd = float(re.search(r"exact samples \(floor\) \| – \| [0-9.]+ ± ([0-9.]+)", table_md).group(1))
    assert floor_sd > 0
    for n in RACE_STEPS:
        vals = {m: row[n] for m, row in table.items()}
        best = min(vals.values())
        names = [RACE_LABELS[m].split(" ")[0] for m, v in vals.items() if v <= best + FLOOR_BAND * floor_sd]
        clause = re.search(rf"N = {n}: ([^(;]+) \(KL", sentence).group(1)
        assert sorted(re.split(r", | and ", clause.strip())) == sorted(names), (n, clause, vals, floor_sd)
    assert len(fig.data) == 1 + len(RACE_METHODS) * len(RACE_STEPS)  # the data, one panel per family and N
    assert not session.running and session.used_seconds > 0


def test_race_off_the_checkerboard_scores_sliced_wasserstein(one_thread):
    h = handlers()
    outs = list(h.start(LiveSession(), "eight_gaussians", ["LSD", "FM (Euler)"], 10, 1, chunk=5, settings=TINY))
    _, table_md, sentence, _ = outs[-1]
    assert set(parse_table(table_md)) == {"lsd", "fm"}
    assert "SW of" in table_md and "exact samples (floor)" in table_md
    assert "sliced Wasserstein" in sentence


def test_stop_ends_the_race(one_thread):
    h = handlers(live_seconds=60.0)
    session = LiveSession()
    gen = h.start(session, "two_moons", ALL, 20_000, 0, chunk=5, settings=TINY)
    first = next(gen)  # before any training
    assert "starting" in first[2] and session.running
    with pytest.raises(InputError, match="already training"):  # one run per session
        next(h.start(session, "two_moons", ALL, 10, 0, settings=TINY))
    timer = threading.Timer(1.0, h.stop, (session,))
    timer.start()
    *_, last = gen
    timer.join()
    _, table_md, sentence, bar = last
    assert sentence.startswith("**stopped**")
    steps = [int(s.replace(",", "")) for s in re.findall(r"\| [A-Z][^|]* \| ([\d,]+) \|", table_md)]
    assert len(steps) == len(RACE_METHODS) and 0 < sum(steps) < 4 * 20_000
    assert max(steps) - min(steps) <= 5  # within one chunk of each other
    assert not session.running
    assert h.stop(session) == ()  # a Stop after the end is harmless
    assert np.isfinite(session.used_seconds)


def test_a_race_cut_by_the_time_cap_says_so_and_what_to_change(one_thread):
    """A busy machine: the cap ends the race before its steps; the sentence names the steps reached,
    the steps asked for and what to change, beside the winners of the models it has."""
    h = handlers(live_seconds=1.5)
    *_, last = h.start(LiveSession(), "checkerboard", ["LSD", "ESD"], 20_000, 0, chunk=5, settings=TINY)
    _, table_md, sentence, _ = last
    assert sentence.startswith("**time cap reached**")
    steps = [int(s.replace(",", "")) for s in re.findall(r"\| [A-Z][^|]* \| ([\d,]+) \|", table_md)]
    reached = re.search(r"The 2 s cap stopped the race at ([\d,]+) of 20,000 steps per family", sentence)
    assert reached and int(reached.group(1).replace(",", "")) == min(steps) < 20_000
    assert "fewer families or steps" in sentence and "Lowest checkerboard KL" in sentence
    # the speed it had and the time its steps would need at it, in place of blaming the machine (a
    # fresh user's 8,000-step race of four families needed about 350 s, far past any load)
    speed = re.search(
        r"\((\d+) steps/s per family on this machine now, and 20,000 steps at that speed need about (\d+) s\)", sentence
    )
    assert speed, sentence
    assert (
        int(speed.group(2)) == pytest.approx(20_000 / max(int(speed.group(1)), 1), rel=0.5) and int(speed.group(2)) > 2
    )


def test_a_stopped_races_bar_gives_every_familys_steps_as_the_sentence_does():
    """A fresh user stopped a race between rounds: the sentence said "LSD 199, ... FM 180" and the bar
    "stopped: step 180 of 1500". A race that ended with unequal steps says their range on the bar."""
    race = Race(toy_source("two_moons"), ("lsd", "fm"), TINY, eval_points=300)
    table = {"lsd": dict.fromkeys(RACE_STEPS, 0.10), "fm": dict.fromkeys(RACE_STEPS, 0.50)}
    unequal = RaceSnapshot("stopped", {"lsd": 199, "fm": 180}, 1500, 12.0, table, race.floor, floor_sd=race.floor_sd)
    _, _, sentence, bar = handlers().render(race, unequal, "SW", 60.0)
    assert "stopped: steps 180-199 of 1500" in bar and " steps/s per family, 2 families" in bar
    assert "unequal steps" in sentence and "LSD 199" in sentence and "FM 180" in sentence
    equal = RaceSnapshot("stopped", {"lsd": 180, "fm": 180}, 1500, 12.0, table, race.floor, floor_sd=race.floor_sd)
    assert "stopped: step 180 of 1500" in handlers().render(race, equal, "SW", 60.0)[3]
    racing = RaceSnapshot("racing", {"lsd": 199, "fm": 180}, 1500, 12.0, table, race.floor, floor_sd=race.floor_sd)
    assert "racing: step 180 of 1500" in handlers().render(race, racing, "SW", 60.0)[3]  # mid-round: the slowest
