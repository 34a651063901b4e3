"""How family S groups the cells of one extraction pass, from the configuration (read by attention extraction,
which sums the groups, and by `scaling_and_cssi`, which reads them back)."""

import pandas as pd

from scinterp_assets.config import ScinterpConfig
from scinterp_assets.core.analyses.scaling import ScalingDesign, scaling_groups
from scinterp_assets.core.analyses.strata import stratifications_from_table
from scinterp_assets.core.attention.grouped import grouped_megabytes


def primary_name(project: ScinterpConfig) -> str:
    return f"{project.scaling.primary_method}_k{project.scaling.primary_k}"


def grouped_rows(reference_edges: pd.DataFrame, attention_sources: list, genes: list[str]) -> tuple[str, ...]:
    """The rows summed per group: sources of "regulates" references that are per-head sources, in gene order."""
    wanted = set(reference_edges.loc[reference_edges["relation"] == "regulates", "source"]) & set(attention_sources)
    return tuple(gene for gene in genes if gene in wanted)


class GroupedDesignTooLarge(ValueError):
    """The per-group sums of a design would exceed scaling.max_grouped_megabytes."""


def family_s_skipped(project: ScinterpConfig, reference_edges: pd.DataFrame, attention_sources: list,
                     genes: list[str]) -> str | None:
    """Why family S cannot run on an extraction (None: it can)."""
    if not project.scaling.enabled:
        return "scaling.enabled is off"
    if not grouped_rows(reference_edges, attention_sources, genes):
        return "no source of a \"regulates\" reference is among the per-head sources (attention_sources)"
    return None


def scaling_design(cell_strata: pd.DataFrame, rows: tuple[str, ...], n_genes: int, layer: int,
                   project: ScinterpConfig) -> ScalingDesign:
    """Every grouping of the extraction pass, rebuilt identically wherever it is needed. Raises
    GroupedDesignTooLarge for a design whose per-group sums would exceed scaling.max_grouped_megabytes."""
    settings = project.scaling
    stratifications = stratifications_from_table(cell_strata)
    primary = next(s for s in stratifications if s.name == primary_name(project))
    design = scaling_groups(primary, stratifications, rows, layer, rung_sizes=settings.rung_sizes,
                            heterogeneity_cells=settings.heterogeneity_cells,
                            seeds=range(project.seeds.scaling, project.seeds.scaling + settings.ladder_seeds),
                            n_null_blocks=min(settings.null_blocks, len(cell_strata)), null_seed=project.seeds.scaling)
    megabytes = grouped_megabytes(len(design.groups.names), len(rows), n_genes)
    if megabytes > settings.max_grouped_megabytes:
        raise GroupedDesignTooLarge(
            f"scaling: {len(design.groups.names)} groups x {len(rows)} reference sources x {n_genes} genes need "
            f"{megabytes:,.0f} MB of per-group sums, above scaling.max_grouped_megabytes "
            f"({settings.max_grouped_megabytes:,g}). Fix: fewer scaling.k_values, scaling.ladder_seeds or "
            "scaling.null_blocks, or raise the limit on a machine with the memory")
    return design
