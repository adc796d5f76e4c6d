"""Instructions per task of the embedded fan-out, counted by valgrind (callgrind).

``python -m benchmarks.instructions [--items N] [--against DIR]``

Rates on a shared 2-core machine swing by a third from one run to the next, which
hides any change worth less than that. The count of instructions a run executes does
not: it repeats to within a tenth of a percent. This runs the embedded fan-out
(1 -> N -> 1 no-op Python steps, as ``python -m benchmarks --only embedded``) under
callgrind twice, with N items and with none, and prints the difference per item: what
one more task costs, without the interpreter's start and the imports. With
``--against DIR`` (another checkout, say a ``git worktree`` of the commit before) both
are counted side by side and the ratio printed.

What it does not see: time spent waiting, in the kernel or for the GIL (a Python step
runs in a thread; handing it over costs context switches more than instructions), so
it complements the rates, never replaces them. Needs ``valgrind`` on the PATH; each
count takes about half a minute for 2,000 items.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_RUN = """
import sys
sys.path[:0] = [{root!r}, {root!r} + "/benchmarks"]
import benchmarks.__main__ as suite
from conveyor import loop
from conveyor.embedded import EmbeddedEngine
from conveyor.logsetup import configure_logging

configure_logging("error", "console")

async def main() -> None:
    async with EmbeddedEngine() as engine:
        await engine.run(suite.fanout(100), {{}})  # the same warm-up with and without items
        if {items}:
            state = await engine.run(suite.fanout({items}), {{}})
            assert state.status == "succeeded", state.reason

loop.run(main())
"""

_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def count(root: Path, items: int) -> int:
    """Instructions the whole process executes, running ``items`` items from ``root``."""
    script = _RUN.format(root=str(root), items=items)
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"the run under valgrind failed ({root}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_task(root: Path, items: int) -> float:
    # Two at once: one per core of the machines these figures come from.
    with ThreadPoolExecutor(2) as pool:
        with_items, without = pool.map(lambda n: count(root, n), (items, 0))
    return (with_items - without) / items


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--against", type=Path, help="another checkout to count beside this one")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    mine = round(per_task(ROOT, args.items))
    figures: dict[str, float] = {"embedded_fanout_instructions_per_task": mine}
    if args.against is not None:
        other = round(per_task(args.against.resolve(), args.items))
        figures["against_instructions_per_task"] = other
        figures["ratio_to_against"] = round(mine / other, 4)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
