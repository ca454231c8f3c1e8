"""Exit codes of the ``diffinfinite`` commands, which scripts can rely on, and the one way to report an error.

Shared by :mod:`napari_diffinfinite.cli` and the dask.distributed path (:func:`napari_diffinfinite.distributed.run_cli`)
so that neither imports the other.
"""

from __future__ import annotations

import sys

EXIT_OK, EXIT_USAGE, EXIT_MASK, EXIT_MODEL, EXIT_MEMORY, EXIT_OUTPUT, EXIT_CANCELLED = 0, 2, 3, 4, 5, 6, 130
EXIT_CODES_HELP = (
    "exit codes: 0 done; 2 bad arguments; 3 unreadable or invalid mask; 4 model not available; "
    "5 out of memory; 6 output exists or cannot be written; 130 interrupted"
)


def report_error(code: int, message: str) -> int:
    """Print ``error: message`` on stderr and return ``code`` (the command's exit status)."""
    print(f"error: {message}", file=sys.stderr)
    return code
