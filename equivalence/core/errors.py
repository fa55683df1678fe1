"""The error the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input from the user: a missing folder, a corrupt or foreign file, an unknown case.

    ``str()`` is one line naming the file (when there is one) and what is wrong with it.
    """

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.problem = " ".join(str(problem).split())  # one line, whatever the cause said
        super().__init__(self.problem if path is None else f"{path}: {self.problem}")
