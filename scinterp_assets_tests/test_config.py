from pathlib import Path

import pytest

from scinterp_assets.config import ConfigError, load_config

MINIMAL = """
home: out
checkpoint_dir: checkpoints
cell_types:
  synthetic_a: {kind: synthetic, modality: CRISPRi, wiring_seed: 1, seed: 2}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scinterp.yaml"
    path.write_text(text)
    return path


def test_repository_configuration_loads():
    config = load_config(Path(__file__).parents[1] / "scinterp.yaml")
    assert {c.modality for c in config.cell_types.values()} == {"CRISPRi", "CRISPRa"}


def test_relative_paths_resolve_against_the_file(tmp_path):
    config = load_config(_write(tmp_path, MINIMAL))
    assert config.home == tmp_path / "out"
    assert config.checkpoint_dir == tmp_path / "checkpoints"


def test_missing_file_names_the_environment_variable(tmp_path):
    with pytest.raises(ConfigError, match="SCINTERP_CONFIG"):
        load_config(tmp_path / "absent.yaml")


def test_h5ad_screen_pointing_at_missing_file(tmp_path):
    text = MINIMAL + """
  k562:
    kind: h5ad
    path: data/k562.h5ad
    perturbation_column: gene
    control_label: non-targeting
    modality: CRISPRi
"""
    with pytest.raises(ConfigError, match=r"cell_types\.k562\.path.*k562\.h5ad does not exist"):
        load_config(_write(tmp_path, text))


def test_wrong_value_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'de_labels\.q_threshold'"):
        load_config(_write(tmp_path, MINIMAL + "de_labels: {q_threshold: 3}\n"))


def test_unknown_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="thresholdz"):
        load_config(_write(tmp_path, MINIMAL + "thresholdz: 1\n"))


def test_cell_type_name_must_be_a_partition_key(tmp_path):
    text = MINIMAL.replace("synthetic_a:", "'K562 (day 8)':")
    with pytest.raises(ConfigError, match="may only use letters"):
        load_config(_write(tmp_path, text))


def test_fingerprint_tracks_thresholds_not_paths(tmp_path):
    base = load_config(_write(tmp_path, MINIMAL))
    moved = load_config(_write(tmp_path, MINIMAL.replace("home: out", "home: elsewhere")))
    stricter = load_config(_write(tmp_path, MINIMAL + "de_labels: {q_threshold: 0.01}\n"))
    assert base.fingerprint() == moved.fingerprint() != stricter.fingerprint()


def test_screen_entries_become_core_specs(tmp_path):
    (tmp_path / "data").mkdir()
    for name in ("gasperini.h5ad", "feature_reference.csv"):
        (tmp_path / "data" / name).write_text("")
    (tmp_path / "data" / "matrix").mkdir()
    text = MINIMAL + """
  k562_gasperini:
    kind: h5ad
    path: data/gasperini.h5ad
    modality: CRISPRi
    guides: {target_pattern: '^(?P<gene>.+)_TSS$', min_umis: 3, multiple: dominant}
  k562_tenx:
    kind: tenx
    path: data/matrix
    modality: CRISPRi
    feature_reference: data/feature_reference.csv
"""
    config = load_config(_write(tmp_path, text))
    spec = config.cell_types["k562_gasperini"].screen_spec()
    assert spec.path == tmp_path / "data" / "gasperini.h5ad" and spec.guides.min_umis == 3
    assert spec.guides.multiple == "dominant" and spec.layout == "generic"
    tenx = config.cell_types["k562_tenx"].screen_spec()
    assert tenx.folder == tmp_path / "data" / "matrix" and tenx.feature_reference == tmp_path / "data" / "feature_reference.csv"


def test_generic_screen_without_labels_and_bad_guide_rule_are_refused(tmp_path):
    (tmp_path / "k562.h5ad").write_text("")
    entry = "\n  k562:\n    kind: h5ad\n    path: k562.h5ad\n    modality: CRISPRi\n"
    with pytest.raises(ConfigError, match="needs perturbation_column and control_label"):
        load_config(_write(tmp_path, MINIMAL + entry))
    with pytest.raises(ConfigError, match=r"cell_types\.k562\.guides.*multiple must be"):
        load_config(_write(tmp_path, MINIMAL + entry + "    guides: {multiple: all}\n"))


def test_pseudobulk_labels_resolve_and_name_the_rule(tmp_path):
    for name in ("k562.h5ad", "K562_essential_normalized_bulk_01.h5ad"):
        (tmp_path / name).write_text("")
    text = MINIMAL + """
  k562:
    kind: h5ad
    layout: replogle
    path: k562.h5ad
    modality: CRISPRi
    pseudobulk_labels: {path: K562_essential_normalized_bulk_01.h5ad, min_abs_z: 1.5}
"""
    config = load_config(_write(tmp_path, text))
    assert config.cell_types["k562"].pseudobulk_labels.path == tmp_path / "K562_essential_normalized_bulk_01.h5ad"
    assert config.label_rule("k562").startswith("pseudobulk |mean z|>=1.5")
    assert config.label_rule("synthetic_a").startswith("welch q<0.05")
    missing = text.replace("min_abs_z: 1.5}", "min_abs_z: 1.5, perturbation_stats: s2.tsv}")
    with pytest.raises(ConfigError, match=r"cell_types\.k562\.pseudobulk_labels\.perturbation_stats.*s2\.tsv does not exist"):
        load_config(_write(tmp_path, missing))


def test_study_shape_configuration_loads_with_its_dictionaries():
    root = Path(__file__).parents[1]
    if not (root.parent / "shared" / "models" / "geneformer" / "V1").is_dir():
        pytest.skip("../shared/models/geneformer is not on this machine")
    config = load_config(root / "scinterp.study-shape.yaml")
    (cell_type,) = config.cell_types.values()
    assert [folder.name for folder in cell_type.gene_dictionaries] == ["V1", "V2"]
    assert all(folder.is_absolute() and folder.is_dir() for folder in cell_type.gene_dictionaries)
    assert config.attention.sources == "analyses"


def test_synthetic_gene_dictionaries_resolve_and_a_missing_folder_is_named(tmp_path):
    (tmp_path / "dictionaries").mkdir()
    text = MINIMAL.replace("seed: 2}", "seed: 2, gene_dictionaries: [dictionaries]}")
    config = load_config(_write(tmp_path, text))
    assert config.cell_types["synthetic_a"].gene_dictionaries == [tmp_path / "dictionaries"]
    with pytest.raises(ConfigError, match=r"cell_types\.synthetic_a\.gene_dictionaries\.0.*absent.*token_dictionary"):
        load_config(_write(tmp_path, text.replace("[dictionaries]", "[absent]")))
