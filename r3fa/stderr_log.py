"""Show an engine's INFO log lines on stderr when a command runs it and nothing else configured logging.

The engines report progress through `logging` (`r3fa.training`: a line per epoch, `r3fa.evaluation`: a line
per 10 %); a library must not configure logging, so the commands that run them call `log_to_stderr`. The
handler writes to whatever `sys.stderr` is when a record comes, so a rich live bar (which redirects stderr
while it runs) shows the lines above itself.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


class _StderrHandler(logging.StreamHandler):
    """A stream handler on the current `sys.stderr`."""

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ sets it; the current sys.stderr wins
        pass


def log_to_stderr(name: str) -> None:
    """Show the INFO lines of logger `name` on stderr, unless the process configured logging itself.

    Args:
        name: the engine's logger (`r3fa.training`, `r3fa.evaluation`).
    """
    logger = logging.getLogger(name)
    if logger.handlers or logging.getLogger().handlers:
        return
    logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)
