"""The atomic filesystem IO manager: round trips, partitions, fan-in, and writes that die midway."""

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import anndata
import dagster as dg
import numpy as np
import pandas as pd
import pytest

from scinterp_assets.resources.io_manager import AtomicFilesystemIOManager, register_npz_type


@dataclass
class Accumulator:
    """A stand-in for AttentionScores: arrays saved to one npz, loaded without pickles."""

    genes: tuple[str, ...]
    sums: np.ndarray

    def save(self, path: str | Path) -> None:
        np.savez(path, genes=np.asarray(self.genes), sums=self.sums)

    @classmethod
    def load(cls, path: str | Path) -> "Accumulator":
        with np.load(path, allow_pickle=False) as stored:
            return cls(tuple(stored["genes"].tolist()), stored["sums"])


register_npz_type("accumulator", Accumulator)

CELL_TYPES = dg.StaticPartitionsDefinition(["HepG2", "K562", "RPE1"])
MODELS = dg.StaticPartitionsDefinition(["geneformer-v1.10m"])
MODEL_X_CELL_TYPE = dg.MultiPartitionsDefinition({"model": MODELS, "cell_type": CELL_TYPES})


def store(io_manager, asset_key, value, partition_key=None, partitions_def=None) -> dg.OutputContext:
    context = dg.build_output_context(
        asset_key=asset_key, partition_key=partition_key, asset_partitions_def=partitions_def
    )
    io_manager.handle_output(context, value)
    return context


def load(io_manager, asset_key, partition_key=None, partitions_def=None):
    context = dg.build_input_context(
        asset_key=asset_key, partition_key=partition_key, asset_partitions_def=partitions_def
    )
    return io_manager.load_input(context)


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": ["TF1", "TF2", None],
            "score": [0.5, np.nan, -1.0],
            "layer": np.array([0, 1, -1], dtype=np.int64),
            "sign": pd.array([1, None, -1], dtype="Int64"),
        }
    )


def counts() -> anndata.AnnData:
    return anndata.AnnData(
        X=np.arange(12, dtype=np.float32).reshape(3, 4),
        obs=pd.DataFrame({"perturbation": ["control", "TF1", "TF1"]}, index=["c1", "c2", "c3"]),
        var=pd.DataFrame(index=["G1", "G2", "G3", "G4"]),
    )


def assert_same(loaded, expected) -> None:
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(loaded, expected)
    elif isinstance(expected, anndata.AnnData):
        np.testing.assert_array_equal(loaded.X, expected.X)
        pd.testing.assert_frame_equal(loaded.obs, expected.obs)
        assert list(loaded.var_names) == list(expected.var_names)
    elif isinstance(expected, Accumulator):
        assert loaded.genes == expected.genes
        np.testing.assert_array_equal(loaded.sums, expected.sums)
    else:
        assert loaded == expected


def stored_names(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


@pytest.mark.parametrize(
    ("value", "file_name"),
    [
        (frame(), "__unpartitioned__.parquet"),
        (counts(), "__unpartitioned__.h5ad"),
        (Accumulator(("G1", "G2"), np.eye(2)), "__unpartitioned__.accumulator.npz"),
        ({"n_cells": 3, "genes": ["G1", "G2"]}, "__unpartitioned__.json"),
        ([1, 2.5, "three"], "__unpartitioned__.json"),
    ],
    ids=["dataframe", "anndata", "npz", "dict", "list"],
)
def test_every_type_round_trips_through_one_file(tmp_path, value, file_name):
    io_manager = AtomicFilesystemIOManager(base_dir=str(tmp_path))
    context = store(io_manager, ["screens", "value"], value)
    directory = tmp_path / "screens" / "value"
    assert stored_names(directory) == [file_name]
    metadata = context.get_logged_metadata()
    assert metadata["path"].value == str(directory / file_name)
    assert metadata["bytes"].value == (directory / file_name).stat().st_size
    assert_same(load(io_manager, ["screens", "value"]), value)


def test_a_multi_partition_key_names_its_file_and_loads_back(tmp_path):
    io_manager = AtomicFilesystemIOManager(base_dir=str(tmp_path))
    key = "K562|geneformer-v1.10m"  # dimensions sort alphabetically: cell_type first
    store(io_manager, "attention_edges", frame(), key, MODEL_X_CELL_TYPE)
    assert stored_names(tmp_path / "attention_edges") == ["K562__geneformer-v1.10m.parquet"]
    assert_same(load(io_manager, "attention_edges", key, MODEL_X_CELL_TYPE), frame())


def test_none_writes_nothing(tmp_path):
    store(AtomicFilesystemIOManager(base_dir=str(tmp_path)), "nothing", None)
    assert not (tmp_path / "nothing").exists()


def test_a_new_format_replaces_the_old_file(tmp_path):
    io_manager = AtomicFilesystemIOManager(base_dir=str(tmp_path))
    store(io_manager, "summary", {"draft": True})
    store(io_manager, "summary", frame())
    assert stored_names(tmp_path / "summary") == ["__unpartitioned__.parquet"]
    assert_same(load(io_manager, "summary"), frame())


def test_loading_what_was_never_materialised_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"partition '__unpartitioned__' in .*never.*found nothing"):
        load(AtomicFilesystemIOManager(base_dir=str(tmp_path)), "never")


def test_an_unregistered_npz_tag_is_refused_on_load(tmp_path):
    """The tag names no module: an unknown one is an error, never an import."""
    directory = tmp_path / "scores"
    directory.mkdir()
    Accumulator(("G1",), np.ones(1)).save(directory / "__unpartitioned__.mystery.npz")
    with pytest.raises(TypeError, match=r"npz type 'mystery', which is not registered.*register_npz_type"):
        load(AtomicFilesystemIOManager(base_dir=str(tmp_path)), "scores")


def test_an_unregistered_savable_type_is_refused_on_output(tmp_path):
    class Unregistered(Accumulator):
        pass

    with pytest.raises(TypeError, match=r"register_npz_type\(tag, .*Unregistered\)"):
        store(AtomicFilesystemIOManager(base_dir=str(tmp_path)), "scores", Unregistered(("G1",), np.ones(1)))


def test_fan_in_returns_the_partitions_that_exist_and_warns_about_the_rest(tmp_path, capsys):
    io_manager = AtomicFilesystemIOManager(base_dir=str(tmp_path))
    for cell_type in ("HepG2", "K562"):
        store(io_manager, "de_labels", {"cell_type": cell_type}, cell_type, CELL_TYPES)
    context = dg.build_input_context(
        asset_key="de_labels",
        asset_partitions_def=CELL_TYPES,
        asset_partition_key_range=dg.PartitionKeyRange("HepG2", "RPE1"),
    )
    assert io_manager.load_input(context) == {"HepG2": {"cell_type": "HepG2"}, "K562": {"cell_type": "K562"}}
    warnings = capsys.readouterr().err  # dagster's console logger writes to stderr
    assert "WARNING" in warnings and "not materialised: ['RPE1']" in warnings

    empty = AtomicFilesystemIOManager(base_dir=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="none of the partitions"):
        empty.load_input(context)


def test_an_unpartitioned_summary_gets_a_dict_even_over_one_partition(tmp_path):
    """The type a summary asset sees must not depend on how many cell types are configured."""
    one_cell_type = dg.StaticPartitionsDefinition(["K562"])

    @dg.asset(partitions_def=one_cell_type)
    def de_labels(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"cell_type": [context.partition_key]})

    @dg.asset
    def label_summary(de_labels: dict) -> dict:
        return {key: len(value) for key, value in de_labels.items()}

    io_manager = AtomicFilesystemIOManager(base_dir=str(tmp_path))
    # One partitioned run that also materialises the unpartitioned summary: the hardest case to tell apart.
    result = dg.materialize(
        [de_labels, label_summary], partition_key="K562", resources={"io_manager": io_manager}
    )
    assert result.success
    assert load(io_manager, "label_summary") == {"K562": 1}


def test_a_cell_type_asset_gathers_its_model_partitions_and_a_model_asset_reads_its_cell_type(tmp_path):
    @dg.asset(partitions_def=MODEL_X_CELL_TYPE)
    def attention_edges(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return pd.DataFrame({"key": [context.partition_key]})

    @dg.asset(partitions_def=CELL_TYPES)
    def edges_by_model(attention_edges: dict) -> list:
        return sorted(attention_edges)

    @dg.asset(partitions_def=CELL_TYPES)
    def gene_universe(context: dg.AssetExecutionContext) -> list:
        return [context.partition_key, "G1"]

    @dg.asset(partitions_def=MODEL_X_CELL_TYPE)
    def scores_in_universe(gene_universe: list) -> list:
        return gene_universe

    resources = {"io_manager": AtomicFilesystemIOManager(base_dir=str(tmp_path))}
    model_run, cell_type_run = "K562|geneformer-v1.10m", "K562"
    assert dg.materialize([attention_edges], partition_key=model_run, resources=resources).success
    assert dg.materialize([gene_universe], partition_key=cell_type_run, resources=resources).success
    gathered = dg.materialize(
        [attention_edges.to_source_asset(), edges_by_model], partition_key=cell_type_run, resources=resources
    )
    read = dg.materialize(
        [gene_universe.to_source_asset(), scores_in_universe], partition_key=model_run, resources=resources
    )
    assert gathered.success and read.success
    io_manager = resources["io_manager"]
    assert load(io_manager, "edges_by_model", cell_type_run, CELL_TYPES) == [model_run]
    assert load(io_manager, "scores_in_universe", model_run, MODEL_X_CELL_TYPE) == ["K562", "G1"]


def test_a_write_that_raises_midway_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    io_manager = AtomicFilesystemIOManager(base_dir=str(tmp_path))
    previous = Accumulator(("G1", "G2"), np.eye(2))
    store(io_manager, "scores", previous)

    def save_half_then_fail(self, path):
        with open(path, "wb") as stream:
            stream.write(b"PK\x03\x04 half of an npz")
        raise OSError("disk full")

    monkeypatch.setattr(Accumulator, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        store(io_manager, "scores", Accumulator(("G1", "G2"), np.zeros((2, 2))))
    monkeypatch.undo()
    assert stored_names(tmp_path / "scores") == ["__unpartitioned__.accumulator.npz"]
    assert_same(load(io_manager, "scores"), previous)


# Run in a child process: registers a type whose save writes part of a file, reports, then hangs until killed.
_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import dagster as dg
    from scinterp_assets.resources.io_manager import AtomicFilesystemIOManager, register_npz_type

    class Accumulator:
        def save(self, path):
            with open(path, "wb") as stream:
                stream.write(b"\\0" * 1_000_000)
                stream.flush()
                print("writing", flush=True)
                time.sleep(120)

        @classmethod
        def load(cls, path):
            raise AssertionError("never loaded")

    register_npz_type("accumulator", Accumulator)
    io_manager = AtomicFilesystemIOManager(base_dir=sys.argv[1])
    io_manager.handle_output(dg.build_output_context(asset_key="scores"), Accumulator())
    """
)


def test_a_writer_killed_midway_leaves_the_previous_file_loadable(tmp_path):
    io_manager = AtomicFilesystemIOManager(base_dir=str(tmp_path))
    previous = Accumulator(("G1", "G2"), np.eye(2))
    store(io_manager, "scores", previous)
    stored_file = tmp_path / "scores" / "__unpartitioned__.accumulator.npz"
    stored_bytes = stored_file.read_bytes()

    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)

    assert stored_file.read_bytes() == stored_bytes
    assert_same(load(io_manager, "scores"), previous)
    (orphan,) = [name for name in stored_names(tmp_path / "scores") if name != stored_file.name]
    assert orphan.startswith(".staging-")  # the half-written file died in its staging folder

    # The next write to the asset sweeps the staging folders of dead writers.
    store(io_manager, "scores", Accumulator(("G3",), np.ones(1)))
    assert stored_names(tmp_path / "scores") == [stored_file.name]
    assert load(io_manager, "scores").genes == ("G3",)


def test_npz_tags_are_checked_on_registration():
    with pytest.raises(ValueError, match="must match"):
        register_npz_type("attention.scores", Accumulator)
    class Impostor(Accumulator):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_npz_type("accumulator", Impostor)


def test_every_writer_follows_the_umask(tmp_path):
    """Parquet through the IO manager, npz outputs (attention, nulls, embeddings) and fetch's manifests
    take one write path: files get the umask's permissions (mkstemp's 0600 hid them from colleagues)."""
    from scinterp_assets.core.attention.scores import save_npz_atomically
    from scinterp_assets.core.files import write_atomically

    previous = os.umask(0o022)
    try:
        written = [save_npz_atomically(tmp_path / "scores.npz", x=np.zeros(3)),
                   write_atomically(tmp_path / "MANIFEST.sha256", lambda staged: staged.write_text("x\n"))]
        manager = AtomicFilesystemIOManager(base_dir=str(tmp_path / "storage"))
        manager.handle_output(dg.build_output_context(asset_key=dg.AssetKey("table")), pd.DataFrame({"a": [1]}))
        written += list((tmp_path / "storage").rglob("*.parquet"))
        assert len(written) == 3 and {path.stat().st_mode & 0o777 for path in written} == {0o644}
        os.umask(0o077)
        private = save_npz_atomically(tmp_path / "private.npz", x=np.zeros(3))
        assert private.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(previous)
    assert not [entry for entry in tmp_path.iterdir() if entry.name.startswith(".staging-")]
