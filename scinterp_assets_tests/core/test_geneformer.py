"""Geneformer folders: family detection, clear load errors, rank-value tokenisation, tiny pretraining."""

from __future__ import annotations

import json
from pathlib import Path
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from safetensors.torch import load_file, save_file

from scinterp_assets.core.models import CountDataError, ModelLoadError, load_model
from scinterp_assets.core.models.dictionaries import load_pickled_dictionary
from scinterp_assets.core.models.geneformer import RankValueTokenizer
from scinterp_assets.core.models.pretrain import TinyGeneformerSpec, train_tiny_geneformer
from scinterp_assets.resources.model_store import fingerprint_folder
from scinterp_assets_tests.core.tiny_models import (
    build_tiny_geneformer,
    differing_files,
    set_config_value,
    tiny_counts,
    write_pickle,
)

# ---------------------------------------------------------------------------------------------------------
# loading


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_load_tiny_model(tmp_path, version):
    model = load_model(build_tiny_geneformer(tmp_path / "m", version=version))
    assert (model.family, model.n_layers, model.n_heads, model.version) == ("geneformer", 2, 2, version)


def test_released_dictionary_names_are_accepted(tmp_path):
    folder = build_tiny_geneformer(tmp_path / "m")
    for stem in ("token_dictionary", "gene_median_dictionary", "gene_name_id_dict"):
        os.rename(folder / f"{stem}.pkl", folder / f"{stem}_gc104M.pkl")
    assert load_model(folder).version == "V1"


def test_two_variants_of_a_dictionary_are_ambiguous(tmp_path):
    folder = build_tiny_geneformer(tmp_path / "m")
    (folder / "token_dictionary_gc30M.pkl").write_bytes((folder / "token_dictionary.pkl").read_bytes())
    with pytest.raises(ModelLoadError, match="several token_dictionary files"):
        load_model(folder)


def test_missing_dictionary_names_file_folder_and_fix(tmp_path):
    folder = build_tiny_geneformer(tmp_path / "m")
    (folder / "gene_median_dictionary.pkl").unlink()
    with pytest.raises(ModelLoadError) as raised:
        load_model(folder)
    message = str(raised.value)
    assert "gene_median_dictionary.pkl" in message and str(folder) in message
    assert "next to config.json" in message


def test_vocabulary_size_mismatch_gives_both_numbers(tmp_path):
    folder = build_tiny_geneformer(tmp_path / "m", n_genes=30)
    set_config_value(folder, "vocab_size", 999)
    with pytest.raises(ModelLoadError, match=r"32 tokens.*vocab_size is 999"):
        load_model(folder)


def test_scgpt_layout_is_routed_to_the_scgpt_loader(tmp_path):
    for name in ("args.json", "vocab.json", "best_model.pt"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(ModelLoadError, match=r"args\.json: no 'nheads' key"):
        load_model(tmp_path)


def test_unknown_layout_lists_contents_and_expected_layouts(tmp_path):
    (tmp_path / "weights.ckpt").write_text("")
    with pytest.raises(ModelLoadError) as raised:
        load_model(tmp_path)
    message = str(raised.value)
    assert "weights.ckpt" in message
    assert "Geneformer folder holds" in message and "scGPT folder holds" in message
    with pytest.raises(ModelLoadError, match="not a folder"):
        load_model(tmp_path / "absent")


def test_missing_weights(tmp_path):
    folder = build_tiny_geneformer(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights found"):
        load_model(folder)


def test_weights_missing_encoder_layers_are_refused(tmp_path):
    folder = build_tiny_geneformer(tmp_path / "m")
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if ".layer.1." not in k}, folder / "model.safetensors")
    with pytest.raises(ModelLoadError, match="lack or mis-shape"):
        load_model(folder)


def test_malicious_dictionary_in_a_checkpoint_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    folder = build_tiny_geneformer(tmp_path / "m")
    (folder / "gene_name_id_dict.pkl").write_bytes(pickle.dumps({"GENE1": Payload()}))
    with pytest.raises(ModelLoadError, match="gene_name_id_dict.pkl"):
        load_model(folder)
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------------------------
# tokenisation


def hand_made_cell() -> tuple[RankValueTokenizer, AnnData]:
    """One cell over genes A..E (+ X, unknown). Normalised value = count / median (the shared factor
    10,000 / total does not change the order): A 10/1 = 10, B 20/2 = 10 (tie with A; B has the smaller
    token), C 3/0.5 = 6, D 0 (dropped), E 80/4 = 20, X unknown (counts towards the total only)."""
    tokens = {"<pad>": 0, "<mask>": 1, "ENSG_B": 2, "ENSG_A": 3, "ENSG_C": 4, "ENSG_D": 5, "ENSG_E": 6}
    medians = {f"ENSG_{g}": np.float32(m) for g, m in zip("ABCDE", [1.0, 2.0, 0.5, 1.0, 4.0])}
    adata = AnnData(
        X=sp.csr_matrix(np.array([[10, 20, 3, 0, 80, 1000]], dtype=np.float32)),
        var=pd.DataFrame(index=[f"ENSG_{g}" for g in "ABCDE"] + ["ENSG_X"]),
    )
    return RankValueTokenizer(tokens, medians, {}, max_genes=2048), adata


def test_dictionaries_from_a_separate_dictionary_folder(tmp_path):
    folder = build_tiny_geneformer(tmp_path / "model")
    dictionaries = tmp_path / "geneformer_package"
    dictionaries.mkdir()
    for stem in ("token_dictionary", "gene_median_dictionary", "gene_name_id_dict"):
        os.rename(folder / f"{stem}.pkl", dictionaries / f"{stem}_gc30M.pkl")
    with pytest.raises(ModelLoadError, match="model_dictionary_dir"):
        load_model(folder)
    assert load_model(folder, dictionary_dir=dictionaries).n_layers == 2


def test_v1_dictionaries_next_to_a_v2_model_are_refused(tmp_path):
    folder = build_tiny_geneformer(tmp_path / "m", version="V1")
    set_config_value(folder, "max_position_embeddings", 4096)  # what a V2 config.json says
    with pytest.raises(ModelLoadError, match=r"V2 model \(max_position_embeddings 4096\).*V1 dictionary.*_gc104M"):
        load_model(folder)


def test_ensembl_mapping_collapses_alternative_ids():
    tokenizer, _ = hand_made_cell()
    mapped = RankValueTokenizer(tokenizer.token_ids, tokenizer.medians, {}, 2048,
                                ensembl_mapping={"ENSG_C_OLD": "ENSG_C"})
    cell = AnnData(X=np.array([[1.0, 2.0, 30.0]], dtype=np.float32),
                   var=pd.DataFrame({"ensembl_id": ["ENSG_C", "ENSG_C_OLD", "ENSG_E"]}, index=["c", "c_old", "e"]))
    assert tokenizer.tokenize(cell)[0].tolist() == [6, 4]  # without the mapping, the retired id is unknown
    assert mapped.tokenize(cell)[0].tolist() == [6, 4]
    assert mapped.map_genes(cell).coverage().unmapped == ("c_old",)  # merged into "c", not lost
    # the merge sums counts: with C at (1 + 2) / 0.5 = 6 against E at 30 / 4 = 7.5, E still leads; raise C's
    cell.X = np.array([[3.0, 2.0, 30.0]], dtype=np.float32)
    assert tokenizer.tokenize(cell)[0].tolist() == [6, 4] and mapped.tokenize(cell)[0].tolist() == [4, 6]


def test_rank_value_order_on_a_hand_made_cell():
    tokenizer, adata = hand_made_cell()
    [cell] = tokenizer.tokenize(adata)
    assert cell.tolist() == [6, 2, 3, 4]  # E, B, A (tie broken by token id), C
    truncated = RankValueTokenizer(tokenizer.token_ids, tokenizer.medians, {}, max_genes=3)
    assert truncated.tokenize(adata)[0].tolist() == [6, 2, 3]
    with_specials = tokenizer.token_ids | {"<cls>": 7, "<eos>": 8}
    v2 = RankValueTokenizer(with_specials, tokenizer.medians, {}, max_genes=3)
    assert v2.tokenize(adata)[0].tolist() == [7, 6, 2, 3, 8]


def test_gene_mapping_routes_and_coverage():
    tokenizer, adata = hand_made_cell()
    symbols = RankValueTokenizer(tokenizer.token_ids, tokenizer.medians, {"a": "ENSG_A", "e": "ENSG_E"}, 2048)
    by_symbol = AnnData(X=np.array([[5.0, 7.0, 9.0]]), var=pd.DataFrame(index=["a", "e", "zz"]))
    assert symbols.tokenize(by_symbol)[0].tolist() == [3, 6]  # a: 5 / 1 before e: 7 / 4
    # var["ensembl_id"] wins over var_names; versioned ids map without their version; repeats are merged
    column = AnnData(
        X=np.array([[1.0, 30.0, 2.0]], dtype=np.float32),
        var=pd.DataFrame({"ensembl_id": ["ENSG_C.4", "ENSG_E", "ENSG_C"]}, index=["c", "e", "c_again"]),
    )
    assert tokenizer.tokenize(column)[0].tolist() == [6, 4]  # E: 30 / 4 = 7.5, then C: (1 + 2) / 0.5 = 6
    coverage = tokenizer.map_genes(column).coverage()
    assert (coverage.n_genes, coverage.n_mapped, coverage.unmapped) == (3, 2, ("c_again",))
    full = tokenizer.map_genes(adata).coverage()
    assert (full.n_mapped, full.fraction, full.unmapped) == (5, 5 / 6, ("ENSG_X",))


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([[1.0, -2.0]], "negative or non-finite.*X"),
        ([[1.0, np.nan]], "negative or non-finite.*X"),
        ([[0.5, 1.2]], "raw-count layer is required"),
    ],
)
def test_non_count_input_is_refused(tmp_path, values, match):
    model = load_model(build_tiny_geneformer(tmp_path / "m", n_genes=2))
    adata = AnnData(X=np.array(values, dtype=np.float32), var=pd.DataFrame(index=["GENE1", "GENE2"]))
    with pytest.raises(CountDataError, match=match):
        model.attention_scores(adata, ["GENE1"])


def test_raw_count_layer_is_used_when_named(tmp_path):
    model = load_model(build_tiny_geneformer(tmp_path / "m"))
    adata = tiny_counts(n_cells=6)
    expected = model.attention_scores(adata, ["GENE1", "GENE2"])
    adata.layers["counts"] = adata.X.copy()
    adata.X = np.log1p(adata.X)
    with pytest.raises(CountDataError):
        model.attention_scores(adata, ["GENE1", "GENE2"])
    from_layer = model.attention_scores(adata, ["GENE1", "GENE2"], layer="counts")
    np.testing.assert_array_equal(from_layer.sum, expected.sum)


def test_bad_genes_and_layers_are_refused(tmp_path):
    model = load_model(build_tiny_geneformer(tmp_path / "m"))
    adata = tiny_counts(n_cells=4)
    with pytest.raises(ValueError, match="not found"):
        model.attention_scores(adata, ["GENE1", "NOT_A_GENE"])
    with pytest.raises(ValueError, match="distinct"):
        model.attention_scores(adata, ["GENE1", "GENE1"])
    with pytest.raises(ValueError, match="layers must lie"):
        model.attention_scores(adata, ["GENE1"], layers=[2])


# ---------------------------------------------------------------------------------------------------------
# tiny pretraining


def programme_counts(n_cells: int, n_genes: int, seed: int) -> AnnData:
    """Cells in four states, each state switching on its own gene programme: rank order is learnable."""
    rng = np.random.default_rng(seed)
    states = rng.integers(0, 4, n_cells)
    programme = rng.lognormal(0.0, 2.0, (4, n_genes))
    rates = programme[states] / programme[states].sum(axis=1, keepdims=True) * 300
    var = pd.DataFrame({"ensembl_id": [f"ENSSYN{i:011d}" for i in range(1, n_genes + 1)]})
    var.index = [f"SYN{i}" for i in range(1, n_genes + 1)]
    return AnnData(X=sp.csr_matrix(rng.poisson(rates).astype(np.float32)), var=var)


def test_tiny_pretraining_writes_a_loadable_checkpoint_and_learns(tmp_path):
    adatas = [programme_counts(200, 100, seed=1), programme_counts(100, 100, seed=2)]
    spec = TinyGeneformerSpec(
        n_layers=2, n_heads=2, hidden_size=32, intermediate_size=64, max_position_embeddings=128,
        max_steps=250, learning_rate=3e-3, num_threads=1,
    )
    messages: list[str] = []
    folder = train_tiny_geneformer(adatas, tmp_path / "tiny", spec=spec, log=messages.append)

    assert folder == tmp_path / "tiny" and [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no staging left
    record = json.loads((folder / "pretraining.json").read_text())
    assert record["steps"] == 250 and record["final_loss"] < record["initial_loss"] - 0.4
    assert "initial" in messages[0] and "final" in messages[-1]
    medians = load_pickled_dictionary(folder / "gene_median_dictionary.pkl")
    assert len(medians) == 100 and all(isinstance(m, np.floating) and m > 0 for m in medians.values())

    model = load_model(folder)
    assert (model.version, model.n_layers, model.n_heads) == ("V1", 2, 2)
    assert model.coverage(adatas[0]).fraction == 1.0
    scores = model.attention_scores(adatas[0][:20], ["SYN1", "SYN2", "SYN3"])
    assert scores.sum.shape == (2, 2, 3, 3) and scores.n_cells == 20

    # a second run replaces the folder atomically
    write_pickle(folder / "stale.pkl", {})
    one_step = TinyGeneformerSpec(**{**record["spec"], "max_steps": 1})
    train_tiny_geneformer(adatas, folder, spec=one_step, log=lambda _: None)
    assert not (folder / "stale.pkl").exists() and [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_tiny_pretraining_twice_writes_identical_bytes(tmp_path):
    """Same spec and data, two fresh folders: every file is byte-identical, pretraining.json included (it
    holds no wall-clock time), so two machines building the demo register the same fingerprint. Two threads,
    as the default spec trains: a pinned thread count splits each reduction the same way every run."""
    adatas = [programme_counts(200, 100, seed=1), programme_counts(100, 100, seed=2)]
    spec = TinyGeneformerSpec(
        n_layers=2, n_heads=2, hidden_size=32, intermediate_size=64, max_position_embeddings=128,
        max_steps=30, num_threads=2,
    )
    first = train_tiny_geneformer(adatas, tmp_path / "first", spec=spec, log=lambda _: None)
    second = train_tiny_geneformer(adatas, tmp_path / "second", spec=spec, log=lambda _: None)
    assert len(list(first.iterdir())) == 6 and differing_files(first, second) == []
    assert "seconds" not in json.loads((first / "pretraining.json").read_text())
    assert fingerprint_folder(first) == fingerprint_folder(second)


def test_h5ad_whose_symbols_map_to_no_token_gets_a_coverage_error(tmp_path):
    from scinterp_assets.core.models import GeneCoverageError

    model = load_model(build_tiny_geneformer(tmp_path / "m"))
    path = tmp_path / "mouse.h5ad"
    AnnData(X=np.ones((4, 3), dtype=np.float32), var=pd.DataFrame(index=["Actb", "Gapdh", "Xist"])).write_h5ad(path)
    import anndata

    screen = anndata.read_h5ad(path)
    with pytest.raises(GeneCoverageError, match=r"0 of 3 genes \(0\.0%\).*Fix: add var\['ensembl_id'\]"):
        model.attention_scores(screen, ["Actb", "Gapdh"])


RELEASED_V2 = Path(__file__).resolve().parents[3] / "shared" / "models" / "geneformer" / "V2"


def test_v2_symbol_var_names_keep_every_gene_the_official_tokenizer_keeps():
    """Geneformer's tokeniser maps var ids through the Ensembl mapping after upper-casing them, and V2's
    mapping lists symbols in upper case: mixed-case symbols (C1orf198, C10orf90) must not be dropped."""
    released = {stem: load_pickled_dictionary(RELEASED_V2 / f"{stem}_gc104M.pkl")
                for stem in ("token_dictionary", "gene_median_dictionary", "gene_name_id_dict", "ensembl_mapping_dict")}
    tokenizer = RankValueTokenizer(released["token_dictionary"], released["gene_median_dictionary"],
                                   released["gene_name_id_dict"], 4094, released["ensembl_mapping_dict"])
    mapping, tokens = released["ensembl_mapping_dict"], released["token_dictionary"]
    mixed = [s for s in ("C1orf198", "C10orf90", "C2orf88", "C11orf58", "C12orf57") if mapping.get(s.upper()) in tokens]
    upper = ["GAPDH", "ACTB", "MALAT1", "TP53", "MYC", "EEF1A1", "RPL13", "B2M", "TMSB4X", "FTL", "VIM"]
    # aliases that only the Ensembl mapping knows (not gene_name_id_dict): with them the names read as ids
    known_symbols = {name.upper() for name in released["gene_name_id_dict"]}
    aliases = sorted(key for key, ensembl in mapping.items() if not key.startswith("ENSG") and
                     key not in known_symbols and ensembl in tokens and released["gene_median_dictionary"].get(ensembl, 0) > 0)[:20]
    symbols = mixed + upper + aliases
    assert len(mixed) >= 3 and len(aliases) == 20
    kept_officially = [s for s in symbols if mapping.get(s.upper()) in tokens]
    cells = AnnData(X=np.ones((1, len(symbols))), var=pd.DataFrame(index=symbols))
    genes = tokenizer.map_genes(cells)
    kept_here = [s for s, token in zip(symbols, genes.tokens) if token >= 0]
    assert set(kept_officially) <= set(kept_here)
    assert set(mixed) <= set(kept_here)


def test_coverage_below_the_minimum_is_refused_before_any_forward_pass():
    from scinterp_assets.core.models import GeneCoverageError
    from scinterp_assets.core.models.geneformer import GeneCoverage

    coverage = GeneCoverage(n_genes=8, n_mapped=2, fraction=0.25, unmapped=tuple(f"X{i}" for i in range(6)))
    coverage.require(0.25, "m on c")  # at the minimum: fine
    with pytest.raises(GeneCoverageError, match=r"m on c: 2 of 8 genes \(25.0%\).*below the configured minimum 50%"
                                                r".*unmapped: X0, X1.*Nothing was computed or stored"):
        coverage.require(0.5, "m on c")


def test_token_counts_in_chunks_equal_the_lengths_of_the_tokenised_cells(tmp_path):
    model = load_model(build_tiny_geneformer(tmp_path / "model", version="V2"))
    adata = tiny_counts(n_cells=11, seed=2)
    lengths = [len(cell) for cell in model.tokenizer.tokenize(adata)]
    assert len(set(lengths)) > 1
    np.testing.assert_array_equal(model.tokenizer.token_counts(adata, chunk=3), lengths)
