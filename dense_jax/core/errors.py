"""Errors whose message is the whole story, and how the CLIs show them: one line, no traceback.

`ReportedError` marks an exception raised for a mistake in what the user gave (config,
arguments, weight or dataset files) or a run that cannot go on; its message names the file or
field and what to do. The training and evaluation CLIs catch it (and FileNotFoundError) and
exit with status 1 and ``error: <message>`` on one line (`one_line`). `parse_flags` does the
same for mistakes in the command line itself (an unknown ``--config.<field>``, a value of the
wrong type), which absl would otherwise show as a traceback.
"""

from __future__ import annotations

import sys

from absl import flags


class ReportedError(Exception):
    """An error the CLIs show as one line: its message says what is wrong and what to do."""


class ConfigError(ReportedError, ValueError):
    """Config values that cannot work together or on this machine (mesh, batch, devices)."""


# What the CLIs report as one line (a missing file's message names the file and the fix).
REPORTED = (ReportedError, FileNotFoundError)


def one_line(err: BaseException) -> str:
    """``error: <message>`` with the message's lines joined by ``; ``."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "error: " + "; ".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (the ``flags_parser`` of ``app.run``) with every mistake in the
    command line shown as one line and exit status 1."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        sys.exit(one_line(err))
    except (AttributeError, KeyError) as err:  # ml_collections: an override of an unknown field
        text = str(err).replace("\\n", " ").replace("\\'", "").strip("'\"")
        sys.exit(one_line(f"a --config override names no field of the config: {text}"))
