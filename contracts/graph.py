"""Graph helpers over task dependencies: order, cycles, ancestry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as a closed path ``[a, b, ..., a]``, or None.

    Iterative, so a chain of thousands of tasks cannot exhaust the interpreter's stack.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    for root in deps:
        if colour[root] != white:
            continue
        path = [root]
        children = [iter(deps.get(root, ()))]
        colour[root] = grey
        while children:
            dep = next(children[-1], None)
            if dep is None:
                colour[path.pop()] = black
                children.pop()
                continue
            if dep not in colour:
                continue
            if colour[dep] == grey:
                cycle = [*path[path.index(dep) :], dep]
                # In dependency-flow order: a -> b means b depends on a.
                return list(reversed(cycle))
            if colour[dep] == white:
                colour[dep] = grey
                path.append(dep)
                children.append(iter(deps.get(dep, ())))
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
