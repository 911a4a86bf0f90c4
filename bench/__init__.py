"""Benchmarks of flowmaps: each module prints a table and saves it (bench/results/, docs/).

Run them from the repository root as modules, with the package installed (``pip install -e .``)::

    python -m bench.step_cost --device cpu
    python -m bench.families --device cuda --steps 30000 --gpus 0 0 1 1 1

Shared helpers (machine facts, tables, results files, the docs sections they rewrite) live in
``bench.common``. Speed and memory are measured here, never asserted in tests.
"""
