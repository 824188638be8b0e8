"""The training files that failed to decode: named once each, and the rule that stops a run.

`sources.SkipUnreadable` replaces an unreadable element by the next readable one and puts the
number of positions it skipped in the element's ``"skipped"`` field, so the skipped positions
of an element read at ``index`` with ``skipped = k`` are ``index - k .. index - 1`` (cyclically).
`UnreadableFiles` collects them from each host batch, writes every new one once, with its path
and decode error, as a line of its log file (``<workdir>/unreadable_images.txt``), and counts
distinct files: a file met again in a later epoch is not counted twice.

The stopping rule: more than ``max(1, max_bad_fraction × dataset size)`` distinct unreadable
files. A single bad file never stops a run (it is logged and skipped); a broken dataset does.
"""

from __future__ import annotations

import os


class UnreadableFiles:
    """Distinct unreadable positions of a `SkipUnreadable` source, with their names and errors."""

    def __init__(self, log_path: str | None):
        self.log_path = log_path
        self.files: dict[int, str] = {}  # position -> "path: error"

    def add(self, host_batch: dict, source) -> int:
        """Record the positions `host_batch` skipped over; returns how many were new."""
        new = []
        for index, skipped in zip(host_batch["index"].tolist(), host_batch["skipped"].tolist()):
            for back in range(1, skipped + 1):
                position = (index - back) % len(source)
                if position not in self.files:
                    self.files[position] = source.describe_failure(position)
                    new.append(self.files[position])
        if new and self.log_path:
            with open(self.log_path, "a") as f:
                f.writelines(line + "\n" for line in new)
        return len(new)

    def too_many(self, dataset_size: int, max_bad_fraction: float) -> bool:
        return len(self.files) > max(1.0, max_bad_fraction * dataset_size)

    def summary(self) -> str:
        """One line: how many files were skipped and where they are listed (or the first)."""
        where = f"listed in {self.log_path}" if self.log_path else f"first: {next(iter(self.files.values()))}"
        return f"{len(self.files)} unreadable images skipped, {where}"

    @staticmethod
    def path(workdir: str) -> str:
        return os.path.join(workdir, "unreadable_images.txt")
