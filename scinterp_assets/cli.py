"""`scinterp` command line: small helpers for the Makefile and for users."""

import argparse
import sys
from pathlib import Path

from scinterp_assets import fetch
from scinterp_assets.config import ConfigError, get_config

# Written once into a new DAGSTER_HOME: this platform runs offline, so Dagster's telemetry stays off.
INSTANCE_YAML = "telemetry:\n  enabled: false\n"


def dagster_home() -> str:
    """Create (if needed) and return the Dagster instance folder declared by the configuration's `home`."""
    home = get_config().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    instance_file = home / "dagster.yaml"
    if not instance_file.exists():
        instance_file.write_text(INSTANCE_YAML)
    return str(home)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scinterp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dagster-home", help="print the DAGSTER_HOME folder of the configuration (created if missing)")
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
    arguments = parser.parse_args(argv)
    if arguments.command == "fetch":
        return fetch_command(arguments)
    try:
        if arguments.command == "dagster-home":
            print(dagster_home())
    except ConfigError as error:
        print(f"scinterp: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
