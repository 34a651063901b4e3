"""`scinterp fetch`: downloads served from a loopback HTTP server in a thread; nothing leaves 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import threading
from functools import partial
from pathlib import Path

import pytest

from scinterp_assets import cli, fetch
from scinterp_assets.fetch import Dataset, FetchError, RemoteFile

PAYLOAD = b"TF\ttarget\tmode\n" * 500


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, plus two broken answers: a body cut short and figshare's '202, empty body'."""

    requests: list[str]

    def do_GET(self):
        self.requests.append(self.path)
        if self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only ten b")
            self.close_connection = True
            return
        if self.path == "/accepted":
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(autouse=True)
def _loopback_without_proxy(monkeypatch):
    # A proxy from the environment must not see (or break) loopback requests.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def upstream(tmp_path):
    """(folder served, base URL, list of request paths) of a threaded HTTP server on 127.0.0.1."""
    folder = tmp_path / "upstream"
    folder.mkdir()
    (folder / "table.tsv").write_bytes(PAYLOAD)
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def toy(url: str, **published) -> Dataset:
    return Dataset(name="toy", description="a table", licence="CC0", citation="nobody",
                   source_page="http://127.0.0.1/", files=(RemoteFile(url, "table.tsv", **published),))


def manifest_lines(dest: Path) -> list[str]:
    return (dest / fetch.MANIFEST_NAME).read_text().splitlines()


def leftovers(dest: Path) -> list[str]:
    return sorted(path.name for path in dest.rglob("*") if path.is_file() and path.parent != dest)


# ----------------------------------------------------------------------------------- success and skip


def test_download_records_sha256_in_manifest_and_sidecar(upstream, tmp_path):
    _, base, _ = upstream
    dest = tmp_path / "data"
    messages: list[str] = []
    [result] = fetch.fetch([toy(f"{base}/table.tsv")], dest, log=messages.append)

    expected = hashlib.sha256(PAYLOAD).hexdigest()
    assert result.status == "downloaded" and result.sha256 == expected
    assert (dest / "toy" / "table.tsv").read_bytes() == PAYLOAD
    assert manifest_lines(dest) == [f"{expected}  toy/table.tsv"]  # `sha256sum -c` format, run from dest
    details = json.loads((dest / fetch.SIDECAR_NAME).read_text())["files"]["toy/table.tsv"]
    assert details["url"] == f"{base}/table.tsv"
    assert details["size_bytes"] == len(PAYLOAD)
    assert details["sha256"] == expected and details["md5"] == hashlib.md5(PAYLOAD).hexdigest()
    assert re.match(r"\d{4}-\d\d-\d\dT", details["downloaded_at"])
    assert leftovers(dest) == ["table.tsv"]  # no .part left behind
    assert any("sha256 recorded" in message for message in messages)


def test_second_run_verifies_the_recorded_checksum_and_does_not_download(upstream, tmp_path):
    folder, base, requests = upstream
    dest = tmp_path / "data"
    fetch.fetch([toy(f"{base}/table.tsv")], dest, log=lambda _: None)
    (folder / "table.tsv").unlink()  # the second run must not need the server at all

    [result] = fetch.fetch([toy(f"{base}/table.tsv")], dest, log=lambda _: None)

    assert result.status == "present"
    assert requests == ["/table.tsv"]
    assert [check.status for check in fetch.verify(dest)] == ["ok"]


def test_published_md5_and_size_are_checked_and_a_pinned_sha256_is_honoured(upstream, tmp_path):
    _, base, _ = upstream
    published = toy(f"{base}/table.tsv", size_bytes=len(PAYLOAD), md5=hashlib.md5(PAYLOAD).hexdigest(),
                    sha256=hashlib.sha256(PAYLOAD).hexdigest())
    messages: list[str] = []
    [result] = fetch.fetch([published], tmp_path / "data", log=messages.append)
    assert result.status == "downloaded"
    assert "md5 verified" in messages[-1]


def test_a_present_file_without_a_record_is_checked_against_the_published_md5_and_recorded(tmp_path):
    dest = tmp_path / "data"
    (dest / "toy").mkdir(parents=True)
    (dest / "toy" / "table.tsv").write_bytes(PAYLOAD)
    closed_port_url = f"http://127.0.0.1:{_closed_port()}/table.tsv"  # would fail if it tried the network

    published = toy(closed_port_url, md5=hashlib.md5(PAYLOAD).hexdigest())
    [result] = fetch.fetch([published], dest, log=lambda _: None)

    assert result.status == "adopted"
    assert manifest_lines(dest) == [f"{hashlib.sha256(PAYLOAD).hexdigest()}  toy/table.tsv"]


# ---------------------------------------------------------------------------------------- failures


def test_checksum_mismatch_deletes_the_partial_file_and_says_so(upstream, tmp_path):
    _, base, _ = upstream
    dest = tmp_path / "data"
    with pytest.raises(FetchError) as raised:
        fetch.fetch([toy(f"{base}/table.tsv", sha256="0" * 64)], dest, log=lambda _: None)

    message = str(raised.value)
    assert "\n" not in message
    assert f"{base}/table.tsv" in message and "table.tsv.part was deleted" in message
    assert "0" * 64 in message and hashlib.sha256(PAYLOAD).hexdigest() in message
    assert leftovers(dest) == []
    assert not (dest / fetch.MANIFEST_NAME).exists()


def test_published_md5_mismatch_is_refused(upstream, tmp_path):
    _, base, _ = upstream
    with pytest.raises(FetchError, match=r"md5 .* differs from the published f{32}.*was deleted"):
        fetch.fetch([toy(f"{base}/table.tsv", md5="f" * 32)], tmp_path / "data", log=lambda _: None)
    assert leftovers(tmp_path / "data") == []


def test_a_server_offering_another_size_is_refused_before_download(upstream, tmp_path):
    _, base, _ = upstream
    with pytest.raises(FetchError, match=rf"offers {len(PAYLOAD)} bytes, not the published 12"):
        fetch.fetch([toy(f"{base}/table.tsv", size_bytes=12)], tmp_path / "data", log=lambda _: None)
    assert leftovers(tmp_path / "data") == []


def test_http_404_is_one_clear_line_naming_the_url(upstream, tmp_path):
    _, base, _ = upstream
    with pytest.raises(FetchError) as raised:
        fetch.fetch([toy(f"{base}/gone.tsv")], tmp_path / "data", log=lambda _: None)
    message = str(raised.value)
    assert message.startswith("HTTP 404 ") and f"{base}/gone.tsv (table.tsv)" in message
    assert "\n" not in message and "update its URL" in message
    assert leftovers(tmp_path / "data") == []


def test_a_body_cut_short_is_not_kept(upstream, tmp_path):
    _, base, _ = upstream
    with pytest.raises(FetchError, match="closed after 10 of 1000 bytes"):
        fetch.fetch([toy(f"{base}/truncated")], tmp_path / "data", log=lambda _: None)
    assert leftovers(tmp_path / "data") == []


def test_202_with_an_empty_body_is_refused(upstream, tmp_path):
    _, base, _ = upstream
    with pytest.raises(FetchError, match="HTTP 202 instead of 200"):
        fetch.fetch([toy(f"{base}/accepted")], tmp_path / "data", log=lambda _: None)
    assert leftovers(tmp_path / "data") == []


def test_an_interrupted_download_leaves_no_partial_file(upstream, tmp_path, monkeypatch):
    _, base, _ = upstream
    monkeypatch.setattr(fetch, "CHUNK_BYTES", 1000)
    monkeypatch.setattr(fetch, "PROGRESS_MIN_BYTES", 0)

    def interrupt_at_first_progress(message: str) -> None:
        if "%" in message:  # the .part file exists and holds the first chunk by now
            assert (tmp_path / "data" / "toy" / "table.tsv.part").exists()
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch.fetch([toy(f"{base}/table.tsv")], tmp_path / "data", log=interrupt_at_first_progress)
    assert leftovers(tmp_path / "data") == []


def test_no_network_says_internet_is_needed(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/table.tsv"
    with pytest.raises(FetchError, match=r"cannot reach .*needs internet access"):
        fetch.fetch([toy(url)], tmp_path / "data", log=lambda _: None)
    assert leftovers(tmp_path / "data") == []


def test_a_damaged_file_is_reported_not_skipped_and_not_overwritten(upstream, tmp_path):
    _, base, requests = upstream
    dest = tmp_path / "data"
    fetch.fetch([toy(f"{base}/table.tsv")], dest, log=lambda _: None)
    (dest / "toy" / "table.tsv").write_bytes(b"edited")

    with pytest.raises(FetchError, match="CHECKSUMS.sha256 records .*run `scinterp fetch toy` again"):
        fetch.fetch([toy(f"{base}/table.tsv")], dest, log=lambda _: None)

    assert (dest / "toy" / "table.tsv").read_bytes() == b"edited"
    assert len(requests) == 1
    assert [check.status for check in fetch.verify(dest)] == ["mismatch"]


def test_file_urls_work_and_only_selects_files(tmp_path):
    source = tmp_path / "source.tsv"
    source.write_bytes(PAYLOAD)
    two = Dataset(name="two", description="d", licence="CC0", citation="c", source_page="file:///",
                  files=(RemoteFile(source.as_uri(), "a.tsv"), RemoteFile(source.as_uri(), "b.tsv")))
    results = fetch.fetch([two], tmp_path / "data", only=["b.tsv"], log=lambda _: None)
    assert [result.path.name for result in results] == ["b.tsv"]
    with pytest.raises(fetch.UnknownDatasetError, match="--only c.tsv"):
        fetch.fetch([two], tmp_path / "data", only=["c.tsv"], log=lambda _: None)


# ---------------------------------------------------------------------------------------- registry


def test_registry_entries_are_well_formed_and_cover_the_documented_names():
    names = [dataset.name for dataset in fetch.DATASETS]
    assert len(set(names)) == len(names)
    for required in ("trrust", "string-v12", "collectri", "replogle-k562-essential", "replogle-k562-gwps",
                     "replogle-rpe1", "scperturb-replogle-k562-essential", "scperturb-norman2019"):
        assert required in names
    for dataset in fetch.DATASETS:
        assert dataset.licence and dataset.citation and dataset.description
        assert dataset.source_page.startswith("https://")
        for remote in dataset.files:
            assert remote.url.startswith("https://")
    gwps = fetch.find_dataset("replogle-k562-gwps")
    assert all("_bulk_" in remote.file_name for remote in gwps.files)  # the 65.8 GB single-cell file: out


def test_invalid_registry_entries_are_rejected():
    with pytest.raises(ValueError, match="plain name"):
        RemoteFile("https://example.org/x", "../x")
    with pytest.raises(ValueError, match="sha256"):
        RemoteFile("https://example.org/x", "x", sha256="abc")
    with pytest.raises(ValueError, match="only https, http and file"):
        RemoteFile("ftp://example.org/x", "x")
    with pytest.raises(ValueError, match="repeat"):
        Dataset("d", "d", "l", "c", "https://e/", 
                (RemoteFile("https://e/x", "x"), RemoteFile("https://e/y", "x")))


# --------------------------------------------------------------------------------------------- CLI


def test_cli_list_prints_every_entry_and_file(capsys):
    assert cli.main(["fetch", "--list"]) == 0
    printed = capsys.readouterr().out
    for dataset in fetch.DATASETS:
        assert re.search(rf"^{re.escape(dataset.name)}  \(", printed, re.MULTILINE)
        for remote in dataset.files:
            assert f"{remote.file_name}  " in printed and remote.url in printed
    assert "dorothea  (not fetchable)" in printed


def test_cli_fetch_then_verify(upstream, tmp_path, monkeypatch, capsys):
    _, base, _ = upstream
    monkeypatch.setattr(fetch, "DATASETS", (toy(f"{base}/table.tsv"),))
    dest = tmp_path / "data"

    assert cli.main(["fetch", "toy", "--dest", str(dest)]) == 0
    assert cli.main(["fetch", "toy", "--dest", str(dest)]) == 0
    assert "present, sha256 verified" in capsys.readouterr().out
    assert cli.main(["fetch", "--verify", "--dest", str(dest)]) == 0
    assert "toy/table.tsv: sha256 verified" in capsys.readouterr().out

    (dest / "toy" / "table.tsv").write_bytes(b"edited")
    assert cli.main(["fetch", "--verify", "toy", "--dest", str(dest)]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_cli_errors_are_one_line_on_stderr(upstream, tmp_path, monkeypatch, capsys):
    _, base, _ = upstream
    monkeypatch.setattr(fetch, "DATASETS", (toy(f"{base}/gone.tsv"),))
    assert cli.main(["fetch", "toy", "--dest", str(tmp_path / "data")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("scinterp fetch: HTTP 404") and error.count("\n") == 1

    assert cli.main(["fetch", "nonsense", "--dest", str(tmp_path)]) == 2
    assert "known: toy" in capsys.readouterr().err
    assert cli.main(["fetch", "dorothea"]) == 2
    assert "not as a stable flat file" in capsys.readouterr().err
    assert cli.main(["fetch", "--verify", "--dest", str(tmp_path / "empty")]) == 1
    assert "nothing to verify" in capsys.readouterr().out


def test_default_data_folder_follows_the_configuration(small_project, tmp_path, monkeypatch):
    monkeypatch.setenv("SCINTERP_CONFIG", str(small_project.source))
    assert fetch.default_data_dir() == small_project.home / "data"

    monkeypatch.setenv("SCINTERP_CONFIG", str(tmp_path / "absent.yaml"))
    monkeypatch.chdir(tmp_path)
    assert fetch.default_data_dir() == tmp_path.resolve() / "data"


def _closed_port() -> int:
    """A loopback port nobody listens on (connection refused, like a machine without network)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
