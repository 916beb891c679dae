"""argparse types of the ``backend`` commands: every numeric option, device and address is checked when the
command line is parsed, so bad input ends with one ``error:`` line (exit 2) before any work. Standard library
only (``backend --help`` stays instant; the device's availability is checked by the command itself).
"""

from __future__ import annotations

import argparse
import math
import re

_DEVICE = re.compile(r"\A(auto|cpu|cuda(:[0-9]{1,2})?|mps)\Z")
_TCP = re.compile(r"\Atcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+|\*):([0-9]{1,5}|\*)\Z")


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def bounded(kind: type, lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """An argparse type: ``kind`` (int or float, finite) in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""

    def parse(text: str):
        value = _number(text, kind)
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo}, got {text!r}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = bounded(int, 1)
positive_float = bounded(float, 0, lo_open=True)
seed = bounded(int, 0, 2**32 - 1)


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (availability is checked when the command starts)."""
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def endpoint(text: str) -> str:
    """A ZeroMQ address: ``tcp://HOST:PORT`` (PORT 1-65535), ``ipc://PATH`` or ``inproc://NAME``."""
    if text.startswith(("ipc://", "inproc://")) and len(text.split("://", 1)[1]) > 0:
        return text
    m = _TCP.match(text)
    if m is None:
        raise argparse.ArgumentTypeError(f"expected tcp://HOST:PORT (or ipc://PATH), got {text!r}")
    if m.group(2) != "*" and not 1 <= int(m.group(2)) <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1..65535, got {text!r}")
    return text


def server_address(text: str) -> str:
    """An address to connect to: an :func:`endpoint` without ``*``."""
    text = endpoint(text)
    if "*" in text:
        raise argparse.ArgumentTypeError(f"a server address needs a host and a port, got {text!r}")
    return text


def check_device_available(name: str) -> str | None:
    """Why the torch device ``name`` cannot be used here (None: it can). Imports torch."""
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"device {name!r}: no CUDA GPU is available here (use --device cpu or auto)"
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            return f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return "device 'mps' is not available here (use --device cpu or auto)"
    return None


def thresholds(text: str) -> list[float]:
    """An argparse type: one or more cut thresholds, comma- and/or space-separated (``0.05,0.1`` or
    ``"0.05 0.1"``), each a feature distance (1 - cos) in (0, 2]. With ``nargs="+"`` and
    :class:`FlattenThresholds` every form is accepted: ``--thresholds 0.05,0.1 0.2``.

    >>> thresholds("0.05, 0.1 0.2")
    [0.05, 0.1, 0.2]
    """
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected thresholds like 0.05,0.1,0.2 (or 0.05 0.1 0.2), got {text!r}")
    values = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected numbers like 0.05,0.1,0.2 (or 0.05 0.1 0.2), got {p!r}") from None
        if not 0 < v <= 2:  # NaN fails too
            raise argparse.ArgumentTypeError(f"thresholds are feature distances (1 - cos) in (0, 2], got {p}")
        values.append(float(v))
    return values


class FlattenThresholds(argparse.Action):
    """``nargs="+"`` of :func:`thresholds`: the lists of every word joined, sorted, duplicates dropped."""

    def __call__(self, parser, namespace, values, option_string=None):
        flat = sorted({v for part in values for v in (part if isinstance(part, list) else [part])})
        setattr(namespace, self.dest, flat)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` shows every option's default: ``(default: X)`` is appended to a help text that does not
    state its default already (options without a value, or defaulting to None / off, are left as they are)."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and action.option_strings and _shown_default(action.default):
            import copy

            action = copy.copy(action)
            action.help = "default: " + _default_text(action.default)
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if not action.option_strings or "default" in text.lower() or not _shown_default(default):
            return action.help
        return f"{text} (default: {_default_text(default)})"


def _shown_default(default) -> bool:
    return not (default is None or default is False or default is argparse.SUPPRESS
                or (isinstance(default, (list, tuple)) and not default))


def _default_text(default) -> str:
    shown = ",".join(str(x) for x in default) if isinstance(default, (list, tuple)) else str(default)
    return shown.replace("%", "%%")


def package_version() -> str:
    """The installed ``ultrametric-seg`` version (for ``--version``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ultrametric-seg")
    except PackageNotFoundError:
        return "unknown (not installed; run from a source tree)"
