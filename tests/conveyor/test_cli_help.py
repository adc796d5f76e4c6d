"""``conveyor --help`` reads as prose: a command's summary is its docstring's first
paragraph, and its own help each paragraph of it, however the source wraps them: never
broken where the source's lines end."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from conveyor.cli.app import app

WIDE = {"COLUMNS": "1000"}  # wide enough that the terminal wraps nothing (and
# tests/conftest.py clears what would force colours on)


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if hasattr(command, "commands"):  # a group of commands
            found += _commands(command, (*prefix, name))
    return found


ROOT: Any = typer.main.get_command(app)
COMMANDS = _commands(ROOT)


def _paragraphs(words: tuple[str, ...]) -> list[str]:
    """A command's help, each paragraph as one line, as the help shows it (code without
    its backticks)."""
    command = ROOT
    for word in words:
        command = command.commands[word]
    paragraphs = (command.help or "").strip().split("\n\n")
    return [" ".join(p.split()).replace("`", "") for p in paragraphs]


def _summary(words: tuple[str, ...]) -> str:
    return _paragraphs(words)[0]


def test_every_command_has_a_summary_to_check() -> None:
    assert len(COMMANDS) >= 25
    assert all(_summary(words) for words in COMMANDS)


def test_the_command_list_shows_each_summary_on_one_line() -> None:
    listing = CliRunner().invoke(app, ["--help"], env=WIDE)
    assert listing.exit_code == 0, listing.output
    rows = {line.strip("│ ").split(" ", 1)[0]: line for line in listing.output.splitlines()}
    for (name,) in (words for words in COMMANDS if len(words) == 1):
        assert _summary((name,)) in rows[name], f"{name}: {rows[name]!r}"


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_a_commands_own_help_shows_each_paragraph_on_one_line(words: tuple[str, ...]) -> None:
    shown = CliRunner().invoke(app, [*words, "--help"], env=WIDE)
    assert shown.exit_code == 0, shown.output
    lines = [line.strip() for line in shown.output.splitlines()]
    for paragraph in _paragraphs(words):
        assert paragraph in lines, shown.output
