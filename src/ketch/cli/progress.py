"""Display the JSON progress messages of an image pull, as the docker CLI does.

On a terminal, each layer keeps one line that is redrawn in place as its status and
progress bar change: the cursor moves up to the layer's line, rewrites it and moves back
below the block. A message without an ID or without progress ends the block and prints a
plain line. In a pipe or a file nothing is redrawn: a line is printed for each status
change, and messages that only advance a progress bar are left out, so a log contains
"a1b2c3d4e5f6: Pull complete" and not a hundred "Downloading" lines.
"""

from __future__ import annotations

import os

from ketch.cli.humanize import human_size

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import TextIO

BAR_WIDTH = 50
DEFAULT_WIDTH = 80
MIN_WIDTH_FOR_BAR = 110


def progress_bar(detail: dict, with_bar: bool = True) -> str:
    """Render ``progressDetail`` as ``[=====>    ]  1.049MB/2.097MB``; "" without numbers.

    Without ``with_bar`` only the numbers are rendered.
    """
    current = detail.get("current") or 0
    total = detail.get("total") or 0
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return human_size(current, 4)
    if not with_bar:
        return f"{human_size(current, 4)}/{human_size(total, 4)}"
    filled = min(BAR_WIDTH, int(BAR_WIDTH * current / total))
    arrow = ">" if filled < BAR_WIDTH else ""
    bar = "=" * filled + arrow + " " * (BAR_WIDTH - filled - len(arrow))
    return f"[{bar}]  {human_size(current, 4)}/{human_size(total, 4)}"


def _has_progress(message: dict) -> bool:
    return "progressDetail" in message or bool(message.get("progress"))


class ProgressDisplay:
    """Write progress messages to ``output``, redrawing per-layer lines on a terminal."""

    def __init__(self, output: TextIO, terminal: bool | None = None) -> None:
        self.output = output
        self.terminal = output.isatty() if terminal is None else terminal
        # Layer ID -> its line's position in the block of lines being redrawn.
        self._lines: dict[str, int] = {}

    def show(self, message: dict) -> None:
        if "aux" in message:
            # Docker passes "aux" data (a push's tag, digest and size) to the command and
            # prints nothing for it. Printed, its empty status would be a blank line.
            return
        layer_id = message.get("id") or ""
        # As in docker, the bar is left out where it would not fit on one line.
        with_bar = self.terminal and self._width() > MIN_WIDTH_FOR_BAR
        bar = progress_bar(message.get("progressDetail") or {}, with_bar)
        if not self.terminal:
            if not bar:
                self.output.write(_describe(message, "") + "\n")
        elif layer_id and _has_progress(message):
            self._redraw(layer_id, _describe(message, bar))
        else:
            self._lines.clear()
            self.output.write(_describe(message, bar) + "\n")
        self.output.flush()

    def _redraw(self, layer_id: str, text: str) -> None:
        text = text[: self._width() - 1]
        if layer_id not in self._lines:
            self._lines[layer_id] = len(self._lines)
            self.output.write(text + "\n")
            return
        distance = len(self._lines) - self._lines[layer_id]
        # Up to the layer's line, clear it, write, then back down below the block.
        self.output.write(f"\x1b[{distance}A\r\x1b[2K{text}\x1b[{distance}B\r")

    def _width(self) -> int:
        """Return the terminal's width in columns; 80 when it is unknown (reported as 0)."""
        try:
            columns = os.get_terminal_size(self.output.fileno()).columns
        except (OSError, ValueError):
            return DEFAULT_WIDTH
        return columns if columns > 0 else DEFAULT_WIDTH


def _describe(message: dict, bar: str) -> str:
    text = message.get("status") or ""
    if message.get("id"):
        text = f"{message['id']}: {text}"
    if bar:
        text = f"{text} {bar}"
    return text
