"""Showing what steps wrote without letting it steer the terminal.

Step output is data: a line holding ``[/bold]`` must not be read as markup (and crash
the table that shows it), and escape sequences must not move the cursor, rewrite
lines, retitle the window or write the clipboard (OSC 52). Control characters are
shown as escapes instead (``\\x1b``); tabs and newlines stay.
"""

from __future__ import annotations

import re

from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def displayable(text: str) -> str:
    """``text`` with every control character but tab and newline written as an escape."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def plain(text: str, style: str = "") -> Text:
    """A rich ``Text`` that is exactly ``text``: no markup, no control sequences."""
    return Text(displayable(text), style=style)
