"""Graph helpers over task dependencies: order, cycles, ancestry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as a closed path ``[a, b, ..., a]``, or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        stack.append(node)
        for dep in deps.get(node, ()):
            if dep not in colour:
                continue
            if colour[dep] == grey:
                return [*stack[stack.index(dep) :], dep]
            if colour[dep] == white and (cycle := visit(dep)) is not None:
                return cycle
        stack.pop()
        colour[node] = black
        return None

    for node in deps:
        if colour[node] == white and (cycle := visit(node)) is not None:
            # Report the cycle in dependency-flow order: a -> b means b depends on a.
            return list(reversed(cycle))
    return None


def ancestors(deps: Mapping[str, Sequence[str]], node: str) -> set[str]:
    """Every task ``node`` depends on, directly or transitively."""
    seen: set[str] = set()
    todo = list(deps.get(node, ()))
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(deps.get(current, ()))
    return seen


def downstream(deps: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Invert dependencies: task -> tasks that depend on it, in declaration order."""
    out: dict[str, list[str]] = {name: [] for name in deps}
    for name, parents in deps.items():
        for parent in parents:
            out.setdefault(parent, []).append(name)
    return out
