"""Workflow files that are not what they should be get a clear error before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.errors import InvalidInput
from contracts.validation import load_workflow, parse_workflow

GOOD = "name: w\ntasks:\n  - name: t\n    script: echo hi\n"


def test_a_file_that_is_not_utf8_names_the_byte(tmp_path: Path) -> None:
    file = tmp_path / "latin.yaml"
    file.write_bytes(b"name: w\n# caf\xe9\ntasks: []\n")
    with pytest.raises(InvalidInput) as caught:
        load_workflow(file)
    assert caught.value.message == f"{file}:2: not UTF-8 text: byte 0xe9 at byte offset 13"


def test_a_file_over_the_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    file = tmp_path / "big.yaml"
    file.write_text(GOOD + "# " + "x" * 5000 + "\n")
    assert load_workflow(file).name == "w"
    with pytest.raises(InvalidInput, match=r"over the 1,000-byte limit.*MAX_WORKFLOW_BYTES"):
        load_workflow(file, max_bytes=1000)


def test_the_default_limit_is_four_mebibytes(tmp_path: Path) -> None:
    file = tmp_path / "huge.yaml"
    with file.open("w") as out:
        out.write(GOOD)
        out.write(("# " + "y" * 1022 + "\n") * (4 * 1024))
    with pytest.raises(InvalidInput, match="over the 4,194,304-byte limit"):
        load_workflow(file)


def test_an_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "\n".join(lines) + "\nname: bomb\ntasks: []\n"
    with pytest.raises(InvalidInput, match="aliases expand to over 1,000,000 values"):
        parse_workflow(text, source="bomb.yaml")


def test_modest_aliases_are_fine() -> None:
    text = (
        "name: w\nx-defaults: &d {script: echo hi}\n"
        "tasks:\n  - {name: a, <<: *d}\n  - {name: b, <<: *d}\n"
    )
    with pytest.raises(InvalidInput, match="x-defaults"):
        parse_workflow(text)  # aliases pass the bomb check; the unknown key is what is wrong
