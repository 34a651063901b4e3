"""What a result was computed with, beyond its inputs: the versions of the packages that compute it."""

from __future__ import annotations

from importlib import metadata

# the packages whose versions can change a number the platform writes
RESULT_PACKAGES = ("scinterp", "numpy", "scipy", "pandas", "scikit-learn", "statsmodels", "anndata", "scanpy",
                   "leidenalg", "igraph", "torch", "transformers", "great_expectations", "dagster")


def package_version(library: str) -> str:
    """The installed version of a distribution, or "absent"."""
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return "absent"


def package_versions(libraries: tuple[str, ...] = RESULT_PACKAGES) -> dict[str, str]:
    return {library: package_version(library) for library in libraries}
