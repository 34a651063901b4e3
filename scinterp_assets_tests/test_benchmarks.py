"""Smoke test of benchmarks/attention_extraction.py at a tiny size: it runs end to end and its naive reference
agrees with the engine. No timing is asserted (the benchmark itself is run by hand: `make bench`)."""

from __future__ import annotations

import math

import pytest

from benchmarks.attention_extraction import METHODS, main

TINY = [
    "--cells", "6,13",
    "--in-process",  # a subprocess per measurement costs seconds of imports each
    "--idle-wait", "0",  # no waiting for other processes to leave the CPUs, no repeats: timing is not tested
    "--retries", "0",
    "--vocab", "60",
    "--genes", "45",
    "--expressed", "8,20,40",
    "--layers", "2",
    "--heads", "2",
    "--hidden", "32",
    "--intermediate", "64",
    "--batch-size", "4",
]


def test_attention_benchmark_runs_and_naive_matches_engine(capsys):
    result = main(TINY)
    printed = capsys.readouterr().out

    assert set(result["records"]) == {(method, n) for method in METHODS for n in (6, 13)}
    for record in result["records"].values():
        assert record["seconds"] > 0 and math.isfinite(record["cells_per_s"])
        assert record["peak_growth_mb"] >= 0
    assert [check["cells"] for check in result["parity"]] == [6, 13]
    for check in result["parity"]:
        assert check["counts_identical"] and check["compared_values"] > 0
        assert check["max_abs_diff"] < 1e-6
    for text in ("engine/naive", "engine/plain", "peak memory growth", "max |mean_naive - mean_engine|"):
        assert text in printed
    assert "MISMATCH" not in printed


def test_naive_budget_skips_instead_of_extrapolating(capsys):
    result = main([*TINY, "--cells", "4,40", "--naive-budget", "1e-9"])
    printed = capsys.readouterr().out

    assert ("naive", 4) in result["records"] and ("naive", 40) not in result["records"]
    assert ("engine", 40) in result["records"] and ("plain", 40) in result["records"]
    assert "NOT measured at 40 cells" in printed and "skipped" in printed


def test_help_prints(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    assert stopped.value.code == 0 and "--naive-budget" in capsys.readouterr().out
