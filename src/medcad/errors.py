"""Errors meant for people: one sentence naming the file and the problem.

Library code raises :class:`MedcadError` (or a subclass) for bad input; the CLI prints its message
on one line and exits with code 2, without a traceback (``medcad --debug`` shows it).
"""

from __future__ import annotations

from pathlib import Path


class MedcadError(Exception):
    """Bad input or a failed precondition that the user can fix."""

    exit_code = 2


class InputError(MedcadError):
    """A file or folder that cannot be used as given."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
