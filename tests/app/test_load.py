"""Many users at once: 8 gradio_client users against a launched app, each training, stopping and
sampling (bench/load_test.py holds the scenario; see its docstring).

Checked: every session's results are its own (two twin sessions with the same seed give the
same model bit for bit, all others differ; each Stop ends only its own run), the server answers
a cheap request throughout (latency percentiles printed), its memory stays bounded, and queued
users are told their place. Sized for a 2-core CI machine (about 30 s).

Time convention: t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _load_bench():
    return importlib.import_module("bench.load_test")


@pytest.fixture(scope="module")
def bench():
    return _load_bench()


@pytest.mark.slow
def test_eight_users_train_stop_and_sample_at_once(bench):
    server = bench.launch(train_concurrency=2)
    try:
        result = bench.run_load(server, clients=8, train_seconds=1.5)
    finally:
        server.close()
    print()
    print(bench.report(result))
    for u in result["users"]:
        print(
            f"user {u.index}: {u.data} seed {u.seed}{' (twin)' if u.twin else ''}; "
            f"queue positions {sorted(set(u.ranks))}; "
            f"first update after {u.queued_s:.1f} s; {len(u.arrivals)} updates; stop at {u.stop_at}; "
            f"ended {u.ended_at:.1f} s: {u.final_status.splitlines()[0] if u.final_status else u.error}"
        )
    problems = bench.check(result)
    assert not problems, problems

    # the server answered the cheap endpoint and the page throughout
    api, http = result["api_ms"], result["http_ms"]
    assert api["n"] >= 5 and http["n"] >= 5
    assert api["p95"] < 5_000 and api["max"] < 20_000, api
    assert http["p95"] < 2_000 and http["max"] < 10_000, http
    # memory: eight small sessions must not cost more than a few hundred MB
    assert 0 < result["rss_peak_mb"] - result["rss_before_mb"] < 1_000, result
    # six users queue behind two training slots and are told where they stand
    assert result["max_rank"] is not None and result["max_rank"] >= 1, result["max_rank"]


def test_the_checks_catch_a_leak(bench):
    """check() is not vacuous: a twin with another model, or a run that ended before its Stop, is reported."""
    u = bench.User
    good = [
        u(
            0,
            "checkerboard",
            7,
            True,
            150,
            final_status="**done** · LSD on checkerboard · step 150",
            trajectory_plot="A",
        ),
        u(
            1,
            "checkerboard",
            7,
            True,
            150,
            final_status="**done** · LSD on checkerboard · step 150",
            trajectory_plot="A",
        ),
        u(
            2,
            "rings",
            102,
            False,
            20_000,
            stop_at=3.0,
            ended_at=4.0,
            final_status="**stopped** · LSD on rings · step 9",
            trajectory_plot="B",
        ),
    ]
    assert bench.check({"users": good}) == []
    leak = [*good[:1], u(**{**good[1].__dict__, "trajectory_plot": "C"}), good[2]]
    assert any("twin" in p for p in bench.check({"users": leak}))
    early = [*good[:2], u(**{**good[2].__dict__, "ended_at": 2.0})]
    assert any("before its own Stop" in p for p in bench.check({"users": early}))
    same = [*good[:2], u(**{**good[2].__dict__, "trajectory_plot": "A"})]
    assert any("same model" in p for p in bench.check({"users": same}))
