"""``conveyor keys new``: signing keys for the broker, a set for each kind of process."""

from __future__ import annotations

import sys

import typer

from conveyor.keys import SETTINGS, new_key_sets

keys = typer.Typer(help="Keys that sign the messages on the broker (docs/security.md).")


def register(app: typer.Typer) -> None:
    app.add_typer(keys, name="keys")


@keys.command()
def new() -> None:
    """Print new keys as KEY=VALUE lines (an env file): give coordinators
    CONVEYOR_COORDINATOR_KEYS, workers CONVEYOR_WORKER_KEYS and clients (the CLI,
    servers, your services) CONVEYOR_CLIENT_KEYS, each as CONVEYOR_SIGNING_KEYS."""
    for role, value in new_key_sets().items():
        sys.stdout.write(f"{SETTINGS[role]}={value}\n")
