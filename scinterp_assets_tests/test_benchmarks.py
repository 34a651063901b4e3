"""Smoke test of benchmarks/attention_extraction.py at a tiny size, for both model families: it runs end to
end and its naive reference agrees with the engine. No timing is asserted (the benchmark itself is run by
hand: `make bench`)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.attention_extraction import METHODS, main
from benchmarks.attention_methods import MODELS, default_setup, write_released_geneformer, write_scgpt_checkpoint

TINY = [
    "--cells",
    "6,13",
    "--in-process",  # a subprocess per measurement costs seconds of imports each
    "--idle-wait",
    "0",  # no waiting for other processes to leave the CPUs, no repeats: timing is not tested
    "--retries",
    "0",
    "--vocab",
    "60",
    "--genes",
    "45",
    "--sources",
    "0",  # every gene per head: the naive reference's own layout
    "--expressed",
    "8,20,40",
    "--layers",
    "2",
    "--heads",
    "2",
    "--hidden",
    "32",
    "--intermediate",
    "64",
    "--batch-size",
    "4",
]


def test_attention_benchmark_runs_both_models_and_naive_matches_engine(capsys):
    result = main(TINY)  # --model defaults to both
    printed = capsys.readouterr().out

    assert list(result["models"]) == ["geneformer", "scgpt"]
    for name, measured in result["models"].items():
        assert measured["setup"]["model"] == name and measured["setup"]["layers"] == 2
        ran = [method for method in METHODS if method in MODELS[name].runners]
        assert set(measured["records"]) == {(method, n) for method in ran for n in (6, 13)}
        for record in measured["records"].values():
            assert record["seconds"] > 0 and math.isfinite(record["cells_per_s"])
            assert record["peak_growth_mb"] >= 0
        assert [check["cells"] for check in measured["parity"]] == [6, 13]
        for check in measured["parity"]:
            assert check["counts_identical"] and check["compared_values"] > 0
            assert check["max_abs_diff"] < 1e-6
            assert check["shape"] == [2, 2, 45, 45]
    scgpt_tokens = result["models"]["scgpt"]["records"][("plain", 6)]["mean_tokens"]
    geneformer_tokens = result["models"]["geneformer"]["records"][("plain", 6)]["mean_tokens"]
    assert scgpt_tokens == pytest.approx(geneformer_tokens + 1)  # same cells; scGPT prepends <cls>
    # scGPT's plain forward is the fused kernel: its engine is compared with the explicit (eager) forward
    assert ("eager", 6) in result["models"]["scgpt"]["records"]
    assert ("eager", 6) not in result["models"]["geneformer"]["records"]
    for text in (
        "Geneformer attention extraction",
        "scGPT attention extraction",
        "Wqkv",
        "engine/naive",
        "engine/eager",
        "engine / fused plain forward",
        "peak memory growth",
        "max |mean_naive - mean_engine|",
        "total wall time",
    ):
        assert text in printed
    assert "MISMATCH" not in printed


def test_engine_with_sources_matches_the_naive_rows_and_head_mean(capsys):
    """A per-head source subset (and value-weighted scores in the same pass): the engine's rows and its head
    mean of every pair agree with the naive reference."""
    result = main([*TINY, "--model", "geneformer", "--cells", "7", "--sources", "9", "--value-weighted"])
    printed = capsys.readouterr().out

    (check,) = result["models"]["geneformer"]["parity"]
    assert check["counts_identical"] and check["shape"] == [2, 2, 9, 45]
    assert check["max_abs_diff"] < 1e-6 and check["head_mean_max_abs_diff"] < check["head_mean_tolerance"]
    assert "head mean of every pair" in printed and "MISMATCH" not in printed


def test_one_model_only(capsys):
    result = main([*TINY, "--model", "scgpt", "--cells", "5"])

    assert list(result["models"]) == ["scgpt"] and "Geneformer" not in capsys.readouterr().out


def test_naive_budget_skips_instead_of_extrapolating(capsys):
    result = main([*TINY, "--model", "geneformer", "--cells", "4,40", "--naive-budget", "1e-9"])
    printed = capsys.readouterr().out

    records = result["models"]["geneformer"]["records"]
    assert ("naive", 4) in records and ("naive", 40) not in records
    assert ("engine", 40) in records and ("plain", 40) in records
    assert "NOT measured at 40 cells" in printed and "skipped" in printed


def test_scgpt_checkpoint_has_the_released_layout(tmp_path):
    from scinterp_assets.core.models import ScGPTModel, load_model
    from scinterp_assets.core.models.scgpt import DEFAULT_MAX_SEQ_LEN, load_state_dict

    setup = default_setup("scgpt", vocab=20, genes=20, sources=0, min_expressed=5, median_expressed=8, max_expressed=12,
                          layers=2, heads=2, hidden=8, intermediate=16)  # fmt: skip
    folder = write_scgpt_checkpoint(tmp_path / "scgpt", setup)

    assert sorted(path.name for path in folder.iterdir()) == ["args.json", "best_model.pt", "vocab.json"]
    args, vocab = (
        json.loads((folder / "args.json").read_text()),
        json.loads((folder / "vocab.json").read_text()),
    )
    assert (args["nlayers"], args["nheads"], args["embsize"], args["d_hid"]) == (2, 2, 8, 16)
    assert list(vocab)[-3:] == ["<pad>", "<cls>", "<eoc>"] and len(vocab) == 23
    keys = set(load_state_dict(folder / "best_model.pt"))
    assert "transformer_encoder.layers.1.self_attn.Wqkv.weight" in keys
    assert not any("in_proj" in key for key in keys)
    model = load_model(folder)
    assert isinstance(model, ScGPTModel) and (model.n_layers, model.n_heads) == (2, 2)
    assert MODELS["scgpt"].max_genes == DEFAULT_MAX_SEQ_LEN - 1  # <cls> takes one of max_seq_len tokens


def test_released_shapes_are_the_defaults():
    assert {name: (s.layers, s.heads, s.hidden) for name in MODELS for s in [default_setup(name)]} == {
        "geneformer": (6, 4, 256),
        "geneformer-v2": (18, 18, 1152),  # V2-316M
        "scgpt": (12, 8, 512),
    }
    default_setup("scgpt", min_expressed=1300, median_expressed=1400, max_expressed=1500)  # cut to 1,199
    with pytest.raises(ValueError, match="max expressed <= vocab"):
        default_setup("scgpt", vocab=3000, max_expressed=3001)
    with pytest.raises(ValueError, match="sources must lie in"):
        default_setup("geneformer", genes=100, sources=101)
    study = default_setup("geneformer")  # the study's workload on the released V1 vocabulary
    assert (study.vocab, study.genes, study.sources, study.min_expressed) == (25_424, 2000, 400, 2500)


def test_help_prints(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    printed = capsys.readouterr().out
    assert stopped.value.code == 0 and "--naive-budget" in printed and "--model" in printed


def test_null_benchmark_runs_at_a_tiny_size():
    from benchmarks import degree_preserving_null

    numbers = degree_preserving_null.main(["--genes", "100", "--tfs", "20", "--edges", "300", "--draws", "20",
                                           "--naive-draws", "2"])
    assert numbers["engine"]["passed"] and numbers["naive"]["passed"]  # both methods' draws verified
    assert numbers["engine"]["draws"] == 20 and numbers["engine"]["median_jaccard_distance"] > 0.3
    assert "engine/naive speed-up" in numbers["report"]


def test_incremental_value_benchmark_runs_quick():
    from benchmarks import incremental_value

    numbers = incremental_value.main(["--quick", "--threads", "1"])
    assert numbers["parity_max_abs_diff"] < 1e-9  # the reweighting bootstrap equals sklearn on written-out resamples
    assert numbers["screen"]["rows"] == numbers["setup"]["perturbations"] * (numbers["setup"]["genes"] - 1)


def test_calibration_benchmark_runs_on_two_tiny_worlds(capsys):
    from benchmarks import calibration

    code = calibration.main(["--worlds", "2", "--processes", "1", "--perturbations", "12", "--genes", "40",
                             "--repeats", "1", "--bootstrap", "40", "--study"])
    printed = capsys.readouterr().out
    assert code in (0, 1) and "every confirmatory null rate compatible" in printed
    table = [line for line in printed.splitlines() if line.startswith(("| confirmatory", "| study"))]
    assert len(table) == 2 * 5 * 2 * 3  # forms x score classes x models x splits, two worlds each
    assert all("| 2 |" in line for line in table)


def test_calibration_benchmark_comparisons_and_references_run_on_tiny_worlds(capsys):
    from benchmarks import calibration

    code = calibration.main(["--worlds", "2", "--processes", "1", "--perturbations", "12", "--genes", "40",
                             "--pf-bootstrap", "40", "--folds", "3", "--comparisons"])
    printed = capsys.readouterr().out
    assert code in (0, 1) and "calibration of A01/A02/A04" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| confirmatory")]
    assert {line.split(" | ")[1] for line in rows} == {
        "exchangeable_target_level", "exchangeable_target_and_pair", "exchangeable_layers", "planted_layer"}
    code = calibration.main(["--worlds", "1", "--processes", "1", "--repeats", "1", "--bootstrap", "40",
                             "--null-draws", "50", "--references"])
    printed = capsys.readouterr().out
    assert code in (0, 1) and "calibration of A09/A10/A12" in printed
    tests = {line.split(" | ")[3] for line in printed.splitlines() if line.startswith("| ")}
    assert {"A09 beyond features", "A12 gene permutation", "A12 Mann-Whitney"} <= tests
    code = calibration.main(["--worlds", "1", "--processes", "1", "--cssi-draws", "9", "--cssi"])
    printed = capsys.readouterr().out
    assert code in (0, 1) and "calibration of A21" in printed
    rows = [line.split(" | ") for line in printed.splitlines() if line.startswith("| confirmatory")]
    assert {row[1] for row in rows} == {"noise", "target_level", "coexpression, shuffled strata", "coexpression"}


RELEASED_DICTIONARIES = Path(__file__).resolve().parents[2] / "shared" / "models" / "geneformer"


def test_study_shaped_world_fills_the_context_of_a_released_v1_shape_around_the_real_dictionaries(tmp_path):
    """The study-shape world is tokenised by the released V1 dictionaries: every gene maps, and a cell that
    expresses more known genes than the 2,048-token context is cut to it."""
    if not (RELEASED_DICTIONARIES / "V1").is_dir():
        pytest.skip("../shared/models/geneformer is not on this machine")
    from scinterp_assets.core.datasets.synthetic import SyntheticWorldSpec, simulate_world, vocabulary_gene_names
    from scinterp_assets.core.models import load_model
    from scinterp_assets.core.models.dictionaries import load_pickled_dictionary
    from scinterp_assets.core.models.geneformer import read_gene_vocabulary

    vocabularies = [read_gene_vocabulary(RELEASED_DICTIONARIES / version) for version in ("V1", "V2")]
    names = vocabulary_gene_names(vocabularies, 3000)
    world = simulate_world(SyntheticWorldSpec(n_genes=3000, n_tfs=100, n_control_cells=20, n_perturbed_genes=30,
                                              cells_per_perturbation=1, mean_library_size=40000,
                                              expression_log_sd=1.0), names)
    folder = write_released_geneformer(tmp_path / "v1-10m", "v1-10m", RELEASED_DICTIONARIES / "V1")
    for name in ("token_dictionary_gc30M.pkl", "gene_median_dictionary_gc30M.pkl", "gene_name_id_dict_gc30M.pkl"):
        assert (folder / name).read_bytes() == (RELEASED_DICTIONARIES / "V1" / name).read_bytes()
    model = load_model(folder)
    released_tokens = load_pickled_dictionary(RELEASED_DICTIONARIES / "V1" / "token_dictionary_gc30M.pkl")
    assert model.bert.config.vocab_size == len(released_tokens)  # 25,426 tokens with <pad> and <mask>
    assert model.coverage(world).fraction == 1.0
    detected = np.diff(world.X.indptr)
    lengths = np.array([len(cell) for cell in model.tokenizer.tokenize(world)])
    np.testing.assert_array_equal(lengths, np.minimum(detected, 2048))
    assert (detected > 2048).mean() > 0.9


def test_peak_sampler_attributes_each_step_its_own_peak():
    """Two steps in one process, the second allocating and touching 400 MB half a second after it starts
    (many sampling windows later): its peak and its growth exceed the first's by about that much, whatever
    the process held before."""
    import dagster as dg

    from benchmarks.study_shape import PeakSampler, Windows, format_report, step_records

    @dg.asset
    def small() -> int:
        time.sleep(1.0)
        return 1

    @dg.asset
    def large(small: int) -> int:
        time.sleep(0.5)
        block = np.ones(50_000_000)  # 400 MB, every page written
        time.sleep(0.5)
        return int(block[-1]) + small

    with dg.DagsterInstance.ephemeral() as instance:
        with PeakSampler(interval=0.05) as sampler:
            if not sampler.resettable:
                pytest.skip("this system cannot reset a process's peak resident set")
            result = dg.materialize([small, large], instance=instance)
        records = {record.step: record for record in step_records(instance, Windows(sampler.windows),
                                                                  [result.run_id])}
    assert set(records) == {"small", "large"} and all(r.status == "ok" for r in records.values())
    assert records["small"].seconds >= 1.0 and records["large"].started > records["small"].started
    assert 300 < records["large"].peak_mb - records["small"].peak_mb < 500
    assert 300 < records["large"].growth_mb < 500 and records["small"].growth_mb < 100
    report = format_report(list(records.values()), wall_seconds=3.0)
    assert "dominating steps:" in report and "large" in report
    assert format_report([], wall_seconds=0.0) == "no step ran"
