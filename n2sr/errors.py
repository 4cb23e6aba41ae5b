"""The one error type users see: a problem with an input, phrased as ``<path>: <problem>[; <fix>]``."""

from __future__ import annotations

import os
from pathlib import Path


class InputError(ValueError):
    """A problem with an input file; the CLI prints it as one line and exits with code 1."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{os.fspath(path)}: {problem}")
        self.path = Path(path)
        self.problem = problem
