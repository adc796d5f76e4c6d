"""Step output is data: it can neither break nor steer the terminal showing it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.commands import conveyor

HOSTILE = r"""
name: hostile
tasks:
  - name: markup
    script: |
      echo '[/bold] [bold red]RED[/bold red] [link=https://evil.example]click[/link]'
      printf '\033[2J\033[1;1Hcleared \033]52;c;ZXZpbA==\007 clipboard\n'
      printf '\033[31mred\033[0m\n' >&2
      echo '[/bold]' >&2
      exit 1
"""


def test_markup_and_escape_sequences_are_shown_as_text(tmp_path: Path) -> None:
    (tmp_path / "h.yaml").write_text(HOSTILE)
    ran = conveyor("run", "h.yaml", cwd=tmp_path)
    assert ran.returncode == 1, ran.stdout + ran.stderr  # failed, not crashed
    assert "Traceback" not in ran.stderr
    assert "[/bold]" in ran.stdout  # shown, not interpreted
    assert "\x1b" not in ran.stdout and "\x1b" not in ran.stderr
    run_id = json.loads(conveyor("runs", "--json", cwd=tmp_path).stdout)[0]["run_id"]

    shown = conveyor("show", run_id, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "[/bold]" in shown.stdout and "\x1b" not in shown.stdout

    logs = conveyor("logs", run_id, cwd=tmp_path)
    assert logs.returncode == 0
    assert "[/bold] [bold red]RED[/bold red]" in logs.stdout
    assert "\\x1b[2J\\x1b[1;1Hcleared \\x1b]52;c;ZXZpbA==\\x07 clipboard" in logs.stdout
    assert "\x1b" not in logs.stdout and "\x07" not in logs.stdout
    raw = conveyor("logs", run_id, "--raw", cwd=tmp_path)
    assert "\x1b[31mred\x1b[0m" in raw.stdout  # asked for: exactly as written


def test_a_parameter_from_the_command_line_is_never_run(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    marker = tmp_path / "PWNED"
    payload = f"x; touch {marker}; $(touch {marker}) `touch {marker}`"
    done = conveyor(
        "run", str(examples / "hello.yaml"), "-p", f"who={payload}", "--json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tasks"][0]["outputs"]["result"] == f"hello, {payload}"
    assert not marker.exists()
    (tmp_path / "inj.yaml").write_text(
        "name: inj\nparams: {repo: {type: str}}\n"
        'tasks:\n  - {name: s, script: "echo {{ params.repo }}"}\n'
    )
    refused = conveyor("run", "inj.yaml", "-p", f"repo={payload}", cwd=tmp_path)
    assert refused.returncode == 2 and "would splice a value into code" in refused.stderr
    assert not marker.exists()
