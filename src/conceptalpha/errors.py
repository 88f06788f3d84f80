"""User-facing errors: a mistake in the user's input, reported in one line.

The CLI turns a :class:`UserError` into ``error: <message>`` and exit code 2
(a traceback only with ``--debug``). Everything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input from the user: a file, field or value that is not what was expected."""


class DataError(UserError):
    """A data file is malformed. The message names the file and what was wrong."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
