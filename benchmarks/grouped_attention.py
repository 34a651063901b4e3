"""Cost of per-stratum and per-rung accumulation (A20-A21) against pooled extraction, in the same run.

    python -m benchmarks.grouped_attention [--cells 200] [--strata 10] [--quick]

One seeded random-weight checkpoint of Geneformer V1-10M's shape (benchmarks/attention_methods.py: 25,424-gene
vocabulary, full-length cells of 2,048 tokens, the study's 2,000-gene universe and 400 per-head sources) runs
`attention_scores` with value-weighted scores, as the extraction asset does, three ways on the same cells:

  pooled    no groups
  strata    + K strata (one grouping of K groups), rows = the per-head sources, the last layer
  product   + what scinterp.yaml's scaling section adds: 5 ladder seeds, strata for K = 2, 3, 5, 10 by two
            methods, shuffled labels, and 100 null blocks

The runs alternate (pooled, strata, product, repeated) and each method's fastest repeat is reported, so
machine noise inflates neither side. Target (issue 14): strata / pooled <= 1.5 for K = 10.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.attention_methods import (
    MODELS,
    default_setup,
    requested_genes,
    requested_sources,
    synthetic_counts,
)
from scinterp_assets.core.analyses.scaling import scaling_groups
from scinterp_assets.core.analyses.strata import Stratification
from scinterp_assets.core.attention.grouped import grouped_megabytes
from scinterp_assets.core.models import load_model

TARGET = 1.5


def _strata(n_cells: int, k: int, seed: int, name: str) -> Stratification:
    labels = np.random.default_rng(seed).integers(0, k, n_cells)
    return Stratification(name, name.split("_k")[0], k, labels)


def designs(n_cells: int, k: int, rows: tuple[str, ...], layer: int) -> dict[str, object]:
    strata = _strata(n_cells, k, 0, f"kmeans_k{k}")
    only_strata = scaling_groups(strata, [strata], rows, layer, rung_sizes=[n_cells], heterogeneity_cells=n_cells,
                                 seeds=[], n_null_blocks=2, null_seed=0).groups
    many = [_strata(n_cells, kk, i, f"{method}_k{kk}") for i, (method, kk) in enumerate(
        (m, kk) for m in ("kmeans", "leiden") for kk in (2, 3, 5, 10))]
    many.append(_strata(n_cells, 5, 99, "shuffled"))
    product = scaling_groups(many[2], many, rows, layer, rung_sizes=[n_cells // 4, n_cells // 2, n_cells],
                             heterogeneity_cells=n_cells // 4, seeds=range(5), n_null_blocks=min(100, n_cells),
                             null_seed=0).groups
    return {"pooled": None, "strata": only_strata, "product": product}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--strata", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="40 cells of at most 1,000 genes, one repeat")
    args = parser.parse_args(argv)
    overrides = {"max_expressed": 1000, "median_expressed": 800, "min_expressed": 500} if args.quick else {}
    setup = default_setup("geneformer", **overrides)
    n_cells, repeats = (40, 1) if args.quick else (args.cells, args.repeats)
    adata = synthetic_counts(n_cells, setup)
    genes, sources = requested_genes(setup), requested_sources(setup)
    with tempfile.TemporaryDirectory() as folder:
        model = load_model(MODELS["geneformer"].write_checkpoint(Path(folder) / "model", setup))
        rows = tuple(sources)
        layer = model.n_layers - 1
        methods = designs(adata.n_obs, args.strata, rows, layer)
        model.attention_scores(adata[:2], genes, sources=sources, value_weighted=True)  # warm-up
        seconds: dict[str, list[float]] = {name: [] for name in methods}
        megabytes = {name: 0.0 for name in methods}
        for _ in range(repeats):
            for name, groups in methods.items():
                started = time.perf_counter()
                model.attention_scores(adata, genes, sources=sources, value_weighted=True,
                                       batch_size=setup.batch_size, token_budget=setup.token_budget, groups=groups)
                seconds[name].append(time.perf_counter() - started)
                if groups is not None:
                    megabytes[name] = grouped_megabytes(len(groups.names), len(rows), len(genes))
    best = {name: min(values) for name, values in seconds.items()}
    print(f"Geneformer V1-10M shape, {n_cells} cells (median {setup.median_expressed} expressed genes, context 2,048), "
          f"G = {len(genes)}, per-head sources and grouped rows = {len(rows)}, value-weighted on, layer {layer}")
    print(f"{'method':<10}{'groups':>8}{'seconds':>10}{'x pooled':>10}{'grouped MB':>12}")
    for name, groups in methods.items():
        n_groups = 0 if groups is None else len(groups.names)
        print(f"{name:<10}{n_groups:>8}{best[name]:>10.1f}{best[name] / best['pooled']:>10.2f}{megabytes[name]:>12.1f}")
    ratio = best["strata"] / best["pooled"]
    print(f"K = {args.strata} strata / pooled: {ratio:.2f}x (target <= {TARGET}x): "
          f"{'met' if ratio <= TARGET else 'NOT met'}")
    return {"seconds": best, "megabytes": megabytes}


if __name__ == "__main__":
    main()
