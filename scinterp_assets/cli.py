"""`scinterp` command line: small helpers for the Makefile and for users."""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from scinterp_assets import fetch
from scinterp_assets.config import ConfigError, get_config

# Added to the DAGSTER_HOME's dagster.yaml unless it says otherwise: this platform runs offline, so Dagster's
# telemetry stays off, and the UI opens on the asset graph, not behind the community pop-up.
INSTANCE_SETTINGS = {"telemetry": {"enabled": False}, "nux": {"enabled": False}}
STOP_GRACE_SECONDS = 20  # `scinterp ui`: how long the webserver and daemon get to stop before being killed


def dagster_home() -> str:
    """Create (if needed) and return the Dagster instance folder declared by the configuration's `home`, with
    INSTANCE_SETTINGS in its dagster.yaml."""
    home = get_config().dagster_home
    ensure_instance_settings(home)
    return str(home)


def ensure_instance_settings(home: Path) -> None:
    """Append to home/dagster.yaml each INSTANCE_SETTINGS key it lacks; what the file says (and its comments)
    is kept."""
    home.mkdir(parents=True, exist_ok=True)
    instance_file = home / "dagster.yaml"
    text = instance_file.read_text() if instance_file.exists() else ""
    settings = yaml.safe_load(text) or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{instance_file}: Dagster's instance file must be a mapping of settings; fix or remove it")
    missing = {key: value for key, value in INSTANCE_SETTINGS.items() if key not in settings}
    if missing:
        separator = "" if not text or text.endswith("\n") else "\n"
        instance_file.write_text(text + separator + yaml.safe_dump(missing, sort_keys=False))


def _signal_group(group: int, signum: int) -> bool:
    """Send `signum` to a process group; False when no process of it is left."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    return True


def ui_command(arguments: argparse.Namespace) -> int:
    """`scinterp ui`: the Dagster webserver and daemon (what `dagster dev` starts, without its deprecation
    notice) in the foreground; Ctrl-C, SIGTERM or a closed terminal (SIGHUP) stops both and returns."""
    if "DAGSTER_HOME" in os.environ:  # the Makefile sets it; a bare call gets the configured one
        ensure_instance_settings(Path(os.environ["DAGSTER_HOME"]))
    else:
        os.environ["DAGSTER_HOME"] = dagster_home()
    bin_dir = Path(sys.executable).parent
    workspace = ["-w", str(arguments.workspace)]
    stopping = False

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # before any child exists
        signal.signal(signum, stop)
    children: list[subprocess.Popen] = []
    try:
        # each in its own process group with the code servers it starts, so that stopping takes them all
        children.append(subprocess.Popen([str(bin_dir / "dagster-webserver"), "-h", arguments.host, "-p",
                                          str(arguments.port), *workspace], start_new_session=True))
        children.append(subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", *workspace],
                                         start_new_session=True))
        print(f"scinterp ui: http://{arguments.host}:{arguments.port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']}); "
              "Ctrl-C stops the webserver and the daemon", flush=True)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        _stop_all(children)
    failed = [child.args[0] for child in children if child.returncode not in (0, -signal.SIGTERM)]
    if not stopping and failed:
        print(f"scinterp ui: {', '.join(failed)} exited with an error; the other was stopped", file=sys.stderr)
        return 1
    return 0


def _stop_all(children: list[subprocess.Popen]) -> None:
    """SIGTERM to every child's process group, STOP_GRACE_SECONDS to finish, then SIGKILL to what is left."""
    for child in children:
        _signal_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    while any(_signal_group(child.pid, 0) for child in children) and time.monotonic() < deadline:
        time.sleep(0.2)  # the code servers finish their shutdown
    for child in children:
        _signal_group(child.pid, signal.SIGKILL)


def fetch_command(arguments: argparse.Namespace) -> int:
    """`scinterp fetch`: list, download or verify public data sets (the only command that needs internet)."""
    if arguments.list:
        print(fetch.describe_registry())
        return 0
    try:
        datasets = [fetch.find_dataset(name) for name in arguments.names]
    except fetch.UnknownDatasetError as error:
        print(f"scinterp fetch: {error}", file=sys.stderr)
        return 2
    if not datasets and not arguments.verify:
        print("scinterp fetch: give a NAME (see `scinterp fetch --list`), or --verify", file=sys.stderr)
        return 2
    try:
        dest = arguments.dest.resolve() if arguments.dest else fetch.default_data_dir()
    except ConfigError as error:
        print(f"scinterp fetch: {error}; or pass --dest DIR", file=sys.stderr)
        return 2
    try:
        if arguments.verify:
            results = fetch.verify(dest, datasets, only=arguments.only)
            for line in fetch.format_verify(results, dest):
                print(line)
            return 0 if results and all(result.ok for result in results) else 1
        print(f"data folder: {dest}")
        fetch.fetch(datasets, dest, only=arguments.only)
    except fetch.UnknownDatasetError as error:
        print(f"scinterp fetch: {error}", file=sys.stderr)
        return 2
    except fetch.FetchError as error:
        print(f"scinterp fetch: {error}", file=sys.stderr)
        return 1
    return 0


def trace_command(arguments: argparse.Namespace) -> int:
    """`scinterp trace TEST_ID`: the chain from a registry row to its inputs (checkpoint, screen files,
    reference files, configuration), read from the Dagster instance of the configuration."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    from scinterp_assets.trace import TraceError, trace

    try:
        config = get_config()
        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(dagster_home())) as instance:
            for line in trace(arguments.test_id, config, instance):
                print(line)
    except (ConfigError, TraceError) as error:
        print(f"scinterp trace: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scinterp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dagster-home", help="print the DAGSTER_HOME folder of the configuration (created if missing)")
    ui_parser = commands.add_parser("ui", description=ui_command.__doc__,
                                    help="serve the Dagster UI (webserver and daemon) until Ctrl-C")
    ui_parser.add_argument("--host", default="127.0.0.1")
    ui_parser.add_argument("--port", type=int, default=3000)
    ui_parser.add_argument("--workspace", type=Path, default=Path("workspace.yaml"))
    fetch_parser = commands.add_parser(
        "fetch", description=fetch_command.__doc__,
        help="download public reference networks and Perturb-seq screens with checksums (needs internet)",
    )
    fetch_parser.add_argument("names", nargs="*", metavar="NAME", help="registry entries to download")
    fetch_parser.add_argument("--list", action="store_true",
                              help="describe every NAME (files, sizes, URLs, licences, citations)")
    fetch_parser.add_argument("--verify", action="store_true",
                              help="check the recorded sha256 of downloaded files (every recorded file if no "
                              "NAME is given); download nothing")
    fetch_parser.add_argument("--dest", type=Path,
                              help="data folder (default: <home>/data of the configuration, or ./data when "
                              "there is no configuration file)")
    fetch_parser.add_argument("--only", action="append", default=[], metavar="FILE",
                              help="only this file of the NAMEs given (repeatable)")
    trace_parser = commands.add_parser("trace", description=trace_command.__doc__,
                                       help="print the chain from a registry row to its inputs")
    trace_parser.add_argument("test_id", help="a test_id of test_registry (or its unique ending)")
    arguments = parser.parse_args(argv)
    if arguments.command == "trace":
        return trace_command(arguments)
    if arguments.command == "fetch":
        return fetch_command(arguments)
    if arguments.command == "ui":
        try:
            return ui_command(arguments)
        except ConfigError as error:
            print(f"scinterp ui: {error}", file=sys.stderr)
            return 2
    try:
        if arguments.command == "dagster-home":
            print(dagster_home())
    except ConfigError as error:
        print(f"scinterp: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
