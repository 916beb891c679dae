"""The one exception type the dataset tools raise for bad input or an unusable environment.

The CLI catches :class:`DatasetError` and prints its message as a single line on stderr (no traceback);
the Blender add-on reports it in the UI. Anything else escaping is a bug.
"""

from __future__ import annotations


class DatasetError(Exception):
    """A user-facing error with a one-line, actionable message."""
