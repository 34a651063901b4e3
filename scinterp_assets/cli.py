"""`scinterp` command line: small helpers for the Makefile and for users."""

import argparse
import sys

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scinterp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dagster-home", help="print the DAGSTER_HOME folder of the configuration (created if missing)")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "dagster-home":
            print(dagster_home())
    except ConfigError as error:
        print(f"scinterp: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
