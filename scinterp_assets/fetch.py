"""`scinterp fetch NAME`: download the public reference networks and Perturb-seq screens, with checksums.

This is the one place in the platform that uses the network, and only when a user runs the command:
nothing in the default path or the tests downloads anything. `DATASETS` is the registry: for each NAME,
the files with URL, size, licence, citation, the md5 the host publishes (Zenodo and figshare publish one
per file) and a sha256 where one is known. Files land in `<dest>/<NAME>/<file>`. The sha256 of every file
is recorded in `<dest>/CHECKSUMS.sha256` (`sha256sum -c` format, paths relative to `<dest>`) with a JSON
sidecar (URL, size, date), and later runs check files against it before skipping them.
A download streams to `<file>.part` in the target folder and is renamed only when it is complete and
verified; a failed or interrupted download deletes its `.part` (there is no resume).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from scinterp_assets.config import CONFIG_ENV_VAR, get_config
from scinterp_assets.core.files import fsync_folder, write_atomically

MANIFEST_NAME = "CHECKSUMS.sha256"
SIDECAR_NAME = "CHECKSUMS.json"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60  # per socket operation, not for the whole file
PROGRESS_MIN_BYTES = 64 * 10**6  # smaller files download without progress lines
USER_AGENT = "scinterp-fetch/0.1 (python-urllib)"

_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_MANIFEST_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


class FetchError(RuntimeError):
    """A download or check failed; the one-line message names the URL or file and the fix."""


class UnknownDatasetError(FetchError):
    """The NAME is not in the registry."""


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file. `md5` is the checksum its host publishes; `sha256` is pinned where known."""

    url: str
    file_name: str
    size_bytes: int | None = None
    md5: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if urllib.parse.urlsplit(self.url).scheme not in ("https", "http", "file"):
            raise ValueError(f"{self.url!r}: only https, http and file URLs are supported")
        if not self.file_name or self.file_name.startswith(".") or set("/\\") & set(self.file_name):
            raise ValueError(f"file name {self.file_name!r} must be a plain name, not a path")
        if self.size_bytes is not None and self.size_bytes <= 0:
            raise ValueError(f"{self.file_name}: size_bytes must be positive")
        for label, value, length in (("md5", self.md5, 32), ("sha256", self.sha256, 64)):
            if value is not None and not re.fullmatch(f"[0-9a-f]{{{length}}}", value):
                raise ValueError(f"{self.file_name}: {label} must be {length} lower-case hex digits")


@dataclass(frozen=True)
class Dataset:
    """One NAME of `scinterp fetch`: its files, where to check them by hand, and how to cite them."""

    name: str
    description: str
    licence: str
    citation: str
    source_page: str
    files: tuple[RemoteFile, ...]
    note: str = ""

    def __post_init__(self) -> None:
        if not _NAME_PATTERN.match(self.name):
            raise ValueError(f"dataset name {self.name!r} may use lower-case letters, digits, '.' and '-'")
        if not self.files:
            raise ValueError(f"{self.name}: at least one file is needed")
        names = [remote.file_name for remote in self.files]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: file names repeat")

    @property
    def size_bytes(self) -> int | None:
        """Total size, or None when some file's size is not recorded."""
        sizes = [remote.size_bytes for remote in self.files]
        return None if None in sizes else sum(sizes)


def _figshare(file_id: int, file_name: str, size_bytes: int, md5: str) -> RemoteFile:
    # ndownloader.figshare.com is the URL figshare's API reports; plus.figshare.com links can answer
    # 202 with an empty body behind a bot check.
    return RemoteFile(f"https://ndownloader.figshare.com/files/{file_id}", file_name, size_bytes, md5=md5)


SCPERTURB_RECORD = 10044268  # the same files, byte for byte (same md5), are in records 7041849 and 13350497


def _scperturb(file_name: str, size_bytes: int, md5: str) -> RemoteFile:
    url = f"https://zenodo.org/records/{SCPERTURB_RECORD}/files/{file_name}?download=1"
    return RemoteFile(url, file_name, size_bytes, md5=md5)


REPLOGLE_CITATION = (
    "Replogle J.M. et al., Mapping information-rich genotype-phenotype landscapes with genome-scale "
    "Perturb-seq, Cell 185:2559 (2022), doi:10.1016/j.cell.2022.05.013; "
    "data doi:10.25452/figshare.plus.20029387"
)
REPLOGLE_PAGE = "https://doi.org/10.25452/figshare.plus.20029387"
SCPERTURB_CITATION = (
    "Peidli S., Green T.D. et al., scPerturb, Nat Methods 21:531 (2024), doi:10.1038/s41592-023-02144-y"
)
SCPERTURB_PAGE = f"https://doi.org/10.5281/zenodo.{SCPERTURB_RECORD}"
SCPERTURB_LICENCE = "CC BY 4.0 (scPerturb Zenodo record); cite the original screen as well"

DATASETS: tuple[Dataset, ...] = (
    Dataset(
        name="trrust",
        description="TRRUST v2 human TF->target table (TF, target, mode, PMIDs; no header)",
        licence="CC BY-SA 4.0",
        citation="Han H. et al., TRRUST v2, Nucleic Acids Res 46:D380 (2018), doi:10.1093/nar/gkx1013",
        source_page="https://www.grnpedia.org/trrust/downloadnetwork.php",
        files=(
            RemoteFile("https://www.grnpedia.org/trrust/data/trrust_rawdata.human.tsv",
                       "trrust_rawdata.human.tsv"),
        ),
    ),
    Dataset(
        name="string-v12",
        description="STRING v12.0 human functional-association links (ENSP ids, combined_score 0-1000) "
        "and the protein info table that maps ENSP ids to gene symbols",
        licence="CC BY 4.0",
        citation="Szklarczyk D. et al., The STRING database in 2023, Nucleic Acids Res 51:D638 (2023), "
        "doi:10.1093/nar/gkac1000",
        source_page="https://string-db.org/cgi/download",
        files=(
            RemoteFile(
                "https://stringdb-downloads.org/download/protein.links.v12.0/9606.protein.links.v12.0.txt.gz",
                "9606.protein.links.v12.0.txt.gz",
            ),
            RemoteFile(
                "https://stringdb-downloads.org/download/protein.info.v12.0/9606.protein.info.v12.0.txt.gz",
                "9606.protein.info.v12.0.txt.gz",
            ),
        ),
    ),
    Dataset(
        name="collectri",
        description="CollecTRI human signed TF->target regulons, v2.0 (source, target, weight +1/-1, "
        "resources, PMIDs); the file decoupler's collectri() reads",
        licence="CC BY 4.0 (Zenodo record); the licences of the integrated resources also apply",
        citation="Mueller-Dott S. et al., Nucleic Acids Res 51:10934 (2023), doi:10.1093/nar/gkad841",
        source_page="https://doi.org/10.5281/zenodo.8192729",
        files=(
            RemoteFile(
                "https://zenodo.org/records/8192729/files/CollecTRI_regulons.csv?download=1",
                "CollecTRI_regulons.csv",
                4_345_649,
                sha256="4473c9189dd53dacc80297709ad1452dda1086a1cc2185f9a56146c261668701",
            ),
        ),
    ),
    Dataset(
        name="replogle-k562-essential",
        description="Replogle 2022 K562 essential-gene CRISPRi Perturb-seq, day 6: raw single-cell h5ad "
        "(dense, 10.7 GB) and the raw and z-normalised pseudo-bulk h5ad",
        licence="CC BY 4.0",
        citation=REPLOGLE_CITATION,
        source_page=REPLOGLE_PAGE,
        files=(
            _figshare(35773219, "K562_essential_raw_singlecell_01.h5ad", 10_661_879_995,
                      "4f1122ce1c7f13299a68df6459a266d3"),
            _figshare(35773070, "K562_essential_raw_bulk_01.h5ad", 79_766_954,
                      "8321d5d3ffc99db2a5c71edca4189735"),
            _figshare(35780870, "K562_essential_normalized_bulk_01.h5ad", 79_766_954,
                      "30496767641cd2e660ee6ecb5baee132"),
        ),
        note="use --only K562_essential_raw_bulk_01.h5ad to skip the 10.7 GB single-cell file",
    ),
    Dataset(
        name="replogle-k562-gwps",
        description="Replogle 2022 K562 genome-wide CRISPRi Perturb-seq, day 8: raw and z-normalised "
        "pseudo-bulk h5ad only",
        licence="CC BY 4.0",
        citation=REPLOGLE_CITATION,
        source_page=REPLOGLE_PAGE,
        files=(
            _figshare(35774443, "K562_gwps_raw_bulk_01.h5ad", 374_587_922,
                      "4570b53c9d62ff6df281e622f0350060"),
            _figshare(35773217, "K562_gwps_normalized_bulk_01.h5ad", 374_587_922,
                      "a3dfaa94ea8724217f5ecb1e14a5f0c8"),
        ),
        note="single-cell files not fetched: K562_gwps_raw_singlecell_01.h5ad is 65.8 GB (the normalised one "
        "as much); scperturb-replogle-k562-gwps is the 8.8 GB single-cell alternative",
    ),
    Dataset(
        name="replogle-rpe1",
        description="Replogle 2022 RPE1 essential-gene CRISPRi Perturb-seq, day 7: raw single-cell h5ad "
        "(dense, 8.7 GB) and the raw and z-normalised pseudo-bulk h5ad",
        licence="CC BY 4.0",
        citation=REPLOGLE_CITATION,
        source_page=REPLOGLE_PAGE,
        files=(
            _figshare(35775606, "rpe1_raw_singlecell_01.h5ad", 8_700_873_216,
                      "6a2a9d0d2bf4ec147f4d1104043b268c"),
            _figshare(35775581, "rpe1_raw_bulk_01.h5ad", 95_350_546,
                      "74765fa87635467a869ea972356ae0e7"),
            _figshare(35775512, "rpe1_normalized_bulk_01.h5ad", 95_350_546,
                      "6f1e7d6a09e2f869759e3c4526b7f171"),
        ),
        note="use --only rpe1_raw_bulk_01.h5ad to skip the 8.7 GB single-cell file",
    ),
    Dataset(
        name="scperturb-replogle-k562-essential",
        description="scPerturb h5ad of the Replogle 2022 K562 essential screen "
        "(single-cell raw counts, compressed)",
        licence=SCPERTURB_LICENCE,
        citation=f"{SCPERTURB_CITATION}; {REPLOGLE_CITATION}",
        source_page=SCPERTURB_PAGE,
        files=(_scperturb("ReplogleWeissman2022_K562_essential.h5ad", 1_546_729_675,
                          "d8cba17576d1a8afc0f7d71b79cad0f7"),),
    ),
    Dataset(
        name="scperturb-replogle-k562-gwps",
        description="scPerturb h5ad of the Replogle 2022 K562 genome-wide screen "
        "(single-cell raw counts, compressed)",
        licence=SCPERTURB_LICENCE,
        citation=f"{SCPERTURB_CITATION}; {REPLOGLE_CITATION}",
        source_page=SCPERTURB_PAGE,
        files=(_scperturb("ReplogleWeissman2022_K562_gwps.h5ad", 8_805_466_154,
                          "13db594f8f1d2ccb88fec44a13e414dc"),),
        note="about 2 million cells: read it backed (anndata backed='r') or per perturbation",
    ),
    Dataset(
        name="scperturb-replogle-rpe1",
        description="scPerturb h5ad of the Replogle 2022 RPE1 essential screen "
        "(single-cell raw counts, compressed)",
        licence=SCPERTURB_LICENCE,
        citation=f"{SCPERTURB_CITATION}; {REPLOGLE_CITATION}",
        source_page=SCPERTURB_PAGE,
        files=(_scperturb("ReplogleWeissman2022_rpe1.h5ad", 1_236_886_900,
                          "cc7f1ec50aeb3a3e1b4a6cfa713d80fa"),),
    ),
    Dataset(
        name="scperturb-norman2019",
        description="scPerturb h5ad of Norman 2019: K562 CRISPRa Perturb-seq, single and paired activations",
        licence=SCPERTURB_LICENCE,
        citation=f"{SCPERTURB_CITATION}; "
        "Norman T.M. et al., Science 365:786 (2019), doi:10.1126/science.aax4438",
        source_page=SCPERTURB_PAGE,
        files=(_scperturb("NormanWeissman2019_filtered.h5ad", 698_680_199,
                          "c870e6967d91c017d9da827bab183cd6"),),
    ),
    Dataset(
        name="scperturb-adamson2016",
        description="scPerturb h5ad of Adamson 2016: K562 CRISPRi Perturb-seq of unfolded-protein-response "
        "genes, experiment GSM2406681 (10X010)",
        licence=SCPERTURB_LICENCE,
        citation=f"{SCPERTURB_CITATION}; "
        "Adamson B. et al., Cell 167:1867 (2016), doi:10.1016/j.cell.2016.11.048",
        source_page=SCPERTURB_PAGE,
        files=(_scperturb("AdamsonWeissman2016_GSM2406681_10X010.h5ad", 471_286_951,
                          "2fa44ea61a8dd35742af618638ec65fc"),),
    ),
)

# Names users may expect that have no stable downloadable flat file; `scinterp fetch NAME` explains why.
UNAVAILABLE: dict[str, str] = {
    "dorothea": "DoRothEA is published only as R data (data/dorothea_hs.rda in github.com/saezlab/dorothea) "
    "and through the OmniPath web API, not as a stable flat file; the project's shared data folder has a "
    "converted copy (reference_networks/dorothea_hs.tsv.gz and the non-academic variant; see SOURCES.md)",
}


# --------------------------------------------------------------------------------------------- lookup


def find_dataset(name: str, registry: Sequence[Dataset] | None = None) -> Dataset:
    """The registry entry called `name`; UnknownDatasetError lists the known names."""
    registry = DATASETS if registry is None else registry
    for dataset in registry:
        if dataset.name == name:
            return dataset
    if name in UNAVAILABLE:
        raise UnknownDatasetError(f"{name} cannot be fetched: {UNAVAILABLE[name]}")
    known = ", ".join(dataset.name for dataset in registry)
    raise UnknownDatasetError(f"unknown NAME {name!r}; known: {known} (see `scinterp fetch --list`)")


def default_data_dir() -> Path:
    """`<home>/data` of the configuration; `./data` when no configuration file exists.

    A configuration that exists but is invalid raises ConfigError rather than silently falling back.
    """
    config_path = Path(os.environ.get(CONFIG_ENV_VAR) or "scinterp.yaml").expanduser()
    if not config_path.is_file():
        return Path("data").resolve()
    return get_config().home / "data"


def human_size(size_bytes: int | None) -> str:
    if size_bytes is None:
        return "size unknown"
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes} B"


def describe_registry(registry: Sequence[Dataset] | None = None) -> str:
    """The `--list` text: every NAME with licence, citation, note and each file's size and URL."""
    registry = DATASETS if registry is None else registry
    lines = []
    for dataset in registry:
        count = f"{len(dataset.files)} file{'s' if len(dataset.files) > 1 else ''}"
        lines.append(f"{dataset.name}  ({count}, {human_size(dataset.size_bytes)}; {dataset.licence})")
        lines.append(f"    {dataset.description}")
        lines.append(f"    cite: {dataset.citation}")
        if dataset.note:
            lines.append(f"    note: {dataset.note}")
        for remote in dataset.files:
            lines.append(f"    - {remote.file_name}  {human_size(remote.size_bytes)}  {remote.url}")
    for name, reason in UNAVAILABLE.items():
        lines.append(f"{name}  (not fetchable) {reason}")
    return "\n".join(lines)


def _selected(datasets: Sequence[Dataset], only: Sequence[str]) -> list[tuple[Dataset, RemoteFile]]:
    pairs = [(dataset, remote) for dataset in datasets for remote in dataset.files
             if not only or remote.file_name in only]
    missing = set(only) - {remote.file_name for _, remote in pairs}
    if missing:
        offered = ", ".join(remote.file_name for dataset in datasets for remote in dataset.files)
        raise UnknownDatasetError(
            f"--only {', '.join(sorted(missing))}: not a file of the NAMEs given; their files: {offered}"
        )
    return pairs


# ------------------------------------------------------------------------------------------- manifest


class Manifest:
    """`<sha256>  <relative path>` lines in CHECKSUMS.sha256, plus URL, size and date in CHECKSUMS.json."""

    def __init__(self, root: Path):
        self.root = root
        self.hashes: dict[str, str] = {}
        self.details: dict[str, dict] = {}
        manifest = root / MANIFEST_NAME
        if manifest.is_file():
            for number, line in enumerate(manifest.read_text().splitlines(), start=1):
                if not line.strip() or line.startswith("#"):
                    continue
                match = _MANIFEST_LINE.match(line)
                if match is None:
                    raise FetchError(
                        f"{manifest} line {number} is not '<sha256>  <file>'; fix or delete that line"
                    )
                self.hashes[match.group(2)] = match.group(1)
        sidecar = root / SIDECAR_NAME
        if sidecar.is_file():
            try:
                self.details = json.loads(sidecar.read_text()).get("files", {})
            except (json.JSONDecodeError, AttributeError) as error:
                raise FetchError(
                    f"{sidecar} is not valid JSON ({error}); delete it: it is rebuilt on the next fetch"
                ) from error

    def record(self, relative_path: str, sha256: str, details: dict) -> None:
        self.hashes[relative_path] = sha256
        self.details[relative_path] = {"sha256": sha256, **details}
        lines = "".join(f"{self.hashes[path]}  {path}\n" for path in sorted(self.hashes))
        write_atomically(self.root / MANIFEST_NAME, lambda staged: staged.write_text(lines))
        files = {path: self.details[path] for path in sorted(self.details)}
        sidecar = {"format": "scinterp-fetch/1", "files": files}
        write_atomically(self.root / SIDECAR_NAME,
                         lambda staged: staged.write_text(json.dumps(sidecar, indent=2) + "\n"))


# ------------------------------------------------------------------------------------ fetch and verify


@dataclass(frozen=True)
class FetchResult:
    path: Path
    sha256: str
    status: Literal["downloaded", "present", "adopted"]


@dataclass(frozen=True)
class _Digest:
    size_bytes: int
    sha256: str
    md5: str


def fetch(datasets: Sequence[Dataset], dest: Path, *, only: Sequence[str] = (),
          log: Callable[[str], None] = print) -> list[FetchResult]:
    """Download every file of `datasets` (or only the named files) into `dest/<NAME>/`.

    Files already present are checked against the recorded or pinned sha256 and skipped; a present file
    with no recorded checksum is checked against the published md5/size and its sha256 recorded.
    Raises FetchError (one line: URL or file, and the fix) at the first failure.
    """
    pairs = _selected(datasets, only)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(dest)
    return [_fetch_file(dataset, remote, dest, manifest, log) for dataset, remote in pairs]


def _fetch_file(dataset: Dataset, remote: RemoteFile, dest: Path, manifest: Manifest, log) -> FetchResult:
    relative_path = f"{dataset.name}/{remote.file_name}"
    folder = dest / dataset.name
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.file_name
    recorded = manifest.hashes.get(relative_path)
    expected = remote.sha256 or recorded
    again = f"delete it and run `scinterp fetch {dataset.name}` again"

    def record(digest: _Digest, **details) -> None:
        manifest.record(relative_path, digest.sha256, {"dataset": dataset.name, "url": remote.url,
                                                       "size_bytes": digest.size_bytes, **details})

    if target.exists():
        digest = _hash_file(target)
        if expected is not None:
            if digest.sha256 != expected:
                origin = "the registry pins" if remote.sha256 else f"{MANIFEST_NAME} records"
                raise FetchError(f"{target} has sha256 {digest.sha256} but {origin} {expected}: "
                                 f"the file is damaged or was replaced; {again}")
            if recorded != digest.sha256:
                record(digest, recorded_at=_now(), origin="present file")
            log(f"{relative_path}: present, sha256 verified")
            return FetchResult(target, digest.sha256, "present")
        problem = _published_mismatch(remote, digest)
        if problem:
            raise FetchError(f"{target} is present but {problem}; {again}")
        record(digest, recorded_at=_now(), origin="present file")
        log(f"{relative_path}: present, {'md5 verified, ' if remote.md5 else ''}sha256 recorded")
        return FetchResult(target, digest.sha256, "adopted")

    _check_free_space(folder, remote)
    part = folder / (remote.file_name + ".part")
    size = f" {human_size(remote.size_bytes)}" if remote.size_bytes else ""
    log(f"{relative_path}: downloading{size} from {remote.url}")
    try:
        digest = _download(dataset, remote, part, log)
        problem = _published_mismatch(remote, digest)
        if problem is None and expected is not None and digest.sha256 != expected:
            problem = f"sha256 {digest.sha256} differs from the expected {expected}"
        if problem:
            raise FetchError(
                f"{remote.url} ({remote.file_name}): {problem}; the partial download {part} was deleted; "
                f"retry, and if it fails again check {dataset.source_page}"
            )
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)  # never leave a partial file, also on Ctrl-C
        raise
    fsync_folder(folder)
    record(digest, md5=digest.md5, downloaded_at=_now(), origin="downloaded")
    verified = "md5 verified, " if remote.md5 else ("sha256 verified, " if expected else "")
    log(f"{relative_path}: downloaded {human_size(digest.size_bytes)}, {verified}sha256 recorded")
    return FetchResult(target, digest.sha256, "downloaded")


def _published_mismatch(remote: RemoteFile, digest: _Digest) -> str | None:
    if remote.size_bytes is not None and digest.size_bytes != remote.size_bytes:
        return f"it has {digest.size_bytes} bytes, not the published {remote.size_bytes}"
    if remote.md5 is not None and digest.md5 != remote.md5:
        return f"md5 {digest.md5} differs from the published {remote.md5}"
    return None


def _download(dataset: Dataset, remote: RemoteFile, part: Path, log) -> _Digest:
    request = urllib.request.Request(remote.url, headers={"User-Agent": USER_AGENT})
    where = f"{remote.url} ({remote.file_name})"
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        raise FetchError(
            f"HTTP {error.code} {error.reason} for {where}; a 429 or 5xx is usually temporary (retry later), "
            f"otherwise check that {dataset.source_page} still lists the file and update its URL in "
            f"scinterp_assets/fetch.py"
        ) from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise FetchError(
            f"cannot reach {where}: {reason}; `scinterp fetch` needs internet access: run it on a "
            f"machine that has it (then copy the data folder here), or set https_proxy"
        ) from error
    with response:
        status = getattr(response, "status", None)
        if status not in (None, 200):  # file:// answers None; figshare answers 202 while it checks a file
            raise FetchError(
                f"HTTP {status} instead of 200 for {where}: the host did not send the file; retry later"
            )
        announced = response.headers.get("Content-Length")
        announced = int(announced) if announced and announced.isdigit() else None
        if announced is not None and remote.size_bytes is not None and announced != remote.size_bytes:
            raise FetchError(
                f"{where}: the server offers {announced} bytes, not the published {remote.size_bytes}; "
                f"check {dataset.source_page} for a new version"
            )
        total = remote.size_bytes or announced
        sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        received = 0
        next_report = 0.1
        try:
            with open(part, "wb") as handle:
                while chunk := response.read(CHUNK_BYTES):
                    handle.write(chunk)
                    sha256.update(chunk)
                    md5.update(chunk)
                    received += len(chunk)
                    if total and total >= PROGRESS_MIN_BYTES and received >= next_report * total:
                        log(f"  {remote.file_name}: {received / total:.0%} of {human_size(total)}")
                        next_report += 0.1
                handle.flush()
                os.fsync(handle.fileno())
        except (OSError, http.client.HTTPException) as error:
            raise FetchError(
                f"download of {where} broke off after {received} bytes ({error}); "
                f"the partial file was deleted: retry"
            ) from error
    if announced is not None and received != announced:
        raise FetchError(
            f"{where}: the connection closed after {received} of {announced} bytes; "
            f"the partial file was deleted: retry"
        )
    return _Digest(received, sha256.hexdigest(), md5.hexdigest())


def _hash_file(path: Path) -> _Digest:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return _Digest(size, sha256.hexdigest(), md5.hexdigest())


def _check_free_space(folder: Path, remote: RemoteFile) -> None:
    if remote.size_bytes is None:
        return
    free = shutil.disk_usage(folder).free
    if free < remote.size_bytes:
        raise FetchError(
            f"{remote.file_name} needs {human_size(remote.size_bytes)} but {folder} has "
            f"{human_size(free)} free; free space or pass --dest DIR"
        )



def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class VerifyResult:
    relative_path: str
    status: Literal["ok", "missing", "mismatch", "unrecorded"]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def verify(dest: Path, datasets: Sequence[Dataset] = (), *, only: Sequence[str] = ()) -> list[VerifyResult]:
    """Check files against their recorded (or pinned) sha256 without downloading anything.

    With no `datasets`, every file listed in `dest/CHECKSUMS.sha256` is checked.
    """
    dest = Path(dest)
    manifest = Manifest(dest)
    if datasets:
        expected = {}
        for dataset, remote in _selected(datasets, only):
            relative_path = f"{dataset.name}/{remote.file_name}"
            expected[relative_path] = remote.sha256 or manifest.hashes.get(relative_path)
    else:
        expected = dict(manifest.hashes)
    return [_verify_one(dest, path, sha256) for path, sha256 in expected.items()]


def _verify_one(dest: Path, relative_path: str, expected: str | None) -> VerifyResult:
    path = dest / relative_path
    if not path.is_file():
        return VerifyResult(relative_path, "missing")
    if expected is None:
        return VerifyResult(relative_path, "unrecorded")
    return VerifyResult(relative_path, "ok" if _hash_file(path).sha256 == expected else "mismatch")


def format_verify(results: Iterable[VerifyResult], dest: Path) -> list[str]:
    """One line per file, with the fix for each problem."""
    fixes = {
        "ok": "sha256 verified",
        "missing": "missing: run `scinterp fetch {name}` to download it",
        "mismatch": "sha256 MISMATCH: damaged or replaced; delete it and run `scinterp fetch {name}`",
        "unrecorded": "present, no checksum recorded: run `scinterp fetch {name}` to check and record it",
    }
    return [f"{result.relative_path}: " + fixes[result.status].format(name=result.relative_path.split("/")[0])
            for result in results] or [
        f"nothing to verify: {Path(dest) / MANIFEST_NAME} lists no files; run `scinterp fetch NAME` first"
    ]
