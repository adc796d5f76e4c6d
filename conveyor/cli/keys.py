"""``conveyor keys new``: signing keys for the broker, a set for each kind of process."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from contracts.errors import InvalidInput, Problem
from conveyor.cli.common import fail_input, say
from conveyor.keys import SETTINGS, new_key_sets

keys = typer.Typer(help="Keys that sign the messages on the broker (docs/security.md).")


def register(app: typer.Typer) -> None:
    app.add_typer(keys, name="keys")


@keys.command()
def new(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write them to this new file, readable by its owner only (never replacing one).",
        ),
    ] = None,
) -> None:
    """Print new keys as KEY=VALUE lines (an env file): give coordinators
    CONVEYOR_COORDINATOR_KEYS, workers CONVEYOR_WORKER_KEYS and clients (the CLI,
    servers, your services) CONVEYOR_CLIENT_KEYS, each as CONVEYOR_SIGNING_KEYS."""
    text = "".join(f"{SETTINGS[role]}={value}\n" for role, value in new_key_sets().items())
    if out is None:
        sys.stdout.write(text)
        return
    try:
        # Created with its mode, and only if new: keys in use are never overwritten.
        descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise fail_input(
            InvalidInput([Problem(f"cannot create it: {exc.strerror}")], source=str(out))
        ) from None
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    say(f"wrote {out}: give each kind of process its line as CONVEYOR_SIGNING_KEYS")
