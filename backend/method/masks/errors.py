"""The one error type of the mask providers (kept apart so providers and the dispatcher share it)."""

from __future__ import annotations


class MaskSourceError(ValueError):
    """A mask source cannot produce masks: missing checkpoint, package, folder or file, or bad data.

    The message names the file or setting to fix.
    """
