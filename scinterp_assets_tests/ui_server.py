"""`scinterp ui` served on loopback for the UI tests (GraphQL and headless Chromium), and the browser they use."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")  # Debian's packages
# headless Chromium on a closed network, as root (FLAGS as the machine notes give them)
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1600,1000")


@dataclass
class Served:
    process: subprocess.Popen
    port: int
    log: Path  # what `scinterp ui` and Dagster printed (a file: a pipe nobody reads would fill and block them)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(f"{self.url}/graphql", data=json.dumps({"query": query}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["data"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve_ui(config_path: Path, home: Path, timeout: float = 120) -> Iterator[Served]:
    """`scinterp ui` for this configuration and DAGSTER_HOME until the block ends (then SIGKILL if still up);
    yields once the webserver answers and the code location has loaded its assets. Its output goes to
    `ui.log` in `home`."""
    env = {**os.environ, "SCINTERP_CONFIG": str(config_path), "DAGSTER_HOME": str(home)}
    scinterp = Path(sys.executable).parent / "scinterp"
    port, log = free_port(), home / "ui.log"
    with open(log, "w") as output:
        process = subprocess.Popen([str(scinterp), "ui", "--host", "127.0.0.1", "--port", str(port)], cwd=REPO,
                                   env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    served = Served(process, port, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{served.url}/server_info", timeout=5):
                    break
            except OSError:
                assert process.poll() is None, f"scinterp ui exited before serving: {log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, f"webserver did not answer within {timeout} s"
                time.sleep(1)
        while not served.graphql("{ assetNodes { id } }")["assetNodes"]:  # the code location loads after
            assert time.monotonic() < deadline, f"the code location did not load within {timeout} s"
            time.sleep(1)
        yield served
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        return (f"{CHROMIUM} or {CHROMEDRIVER} missing: `make test` installs Debian's chromium and chromium-driver "
                "where it may (apt-get as root)")
    return None


@contextlib.contextmanager
def headless_chromium(user_data: Path):
    """A Selenium driver of Debian's headless Chromium with its own empty profile folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={user_data}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def dagster_processes_serving(home: Path) -> list[str]:
    """Command lines of the live processes whose environment names this DAGSTER_HOME."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"DAGSTER_HOME={home}".encode() in (proc / "environ").read_bytes():
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found
