from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# Python steps in the examples and tests import their modules by name.
for path in (str(EXAMPLES), str(ROOT / "tests" / "steps")):
    if path not in sys.path:
        sys.path.insert(0, path)
