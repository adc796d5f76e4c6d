"""YAML reading that remembers where each value came from, for errors a user can act on."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from contracts.errors import InvalidInput, Problem

Path = tuple[str | int, ...]


class Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, so keys like ``on`` stay strings."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class SourceMap:
    """Line numbers (1-based) of every mapping key and sequence item, by document path."""

    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        # Fall back to the nearest enclosing node: a missing field is reported where its
        # parent starts.
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def problem(self, path: Path, message: str) -> Problem:
        return Problem(message=message, path=format_path(path), line=self.line_of(path))


MAX_EXPANDED_NODES = 1_000_000
"""Most values a document may hold once its aliases are expanded (refuses alias bombs)."""


def expanded_size(node: yaml.Node | None, limit: int) -> int:
    """How many nodes the document holds with every alias expanded, counting to ``limit``.

    An alias reuses its anchor's node, so a few lines of anchors can stand for billions
    of values; counting stops as soon as the limit is passed.
    """
    count = 0
    pending = [node] if node is not None else []
    while pending and count <= limit:
        current = pending.pop()
        count += 1
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                pending.append(key)
                pending.append(value)
        elif isinstance(current, yaml.SequenceNode):
            pending.extend(current.value)
    return count


def load_yaml(text: str, source: str | None = None) -> tuple[Any, SourceMap]:
    """Parse YAML text into plain data plus a source map; duplicate keys are errors."""
    try:
        node = yaml.compose(text, Loader=Loader)
        if expanded_size(node, MAX_EXPANDED_NODES) > MAX_EXPANDED_NODES:
            raise InvalidInput(
                [
                    Problem(
                        f"its aliases expand to over {MAX_EXPANDED_NODES:,} values"
                        " (refused as an alias bomb)"
                    )
                ],
                source=source,
            )
        data = yaml.load(text, Loader=Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        reason = exc.problem or str(exc)
        raise InvalidInput(
            [Problem(f"malformed YAML: {reason}", line=line)], source=source
        ) from exc
    except yaml.YAMLError as exc:
        raise InvalidInput([Problem(f"malformed YAML: {exc}")], source=source) from exc
    smap = SourceMap()
    problems: list[Problem] = []
    if node is not None:
        _walk(node, (), smap, problems)
    if problems:
        raise InvalidInput(problems, source=source)
    return data, smap


def _walk(node: yaml.Node, path: Path, smap: SourceMap, problems: list[Problem]) -> None:
    smap.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key == "<<":
                continue
            if key in seen:
                problems.append(
                    Problem(
                        f"duplicate key {key!r} (first defined on line {seen[key]})",
                        path=format_path((*path, key)),
                        line=line,
                    )
                )
                continue
            seen[key] = line
            smap.lines[(*path, key)] = line
            _walk(value_node, (*path, key), smap, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            smap.lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), smap, problems)
