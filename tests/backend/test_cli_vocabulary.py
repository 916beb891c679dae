"""One vocabulary on the command lines: --version on both CLIs, defaults in every subcommand's --help, thresholds
comma- or space-separated everywhere, --mask-source with --masks as alias, progress rates from the first event."""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from backend import arg_types as T
from backend.cli import build_parser
from backend.progress_bars import ProgressBars


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module,prog", [("backend", "backend"), ("dataset_tools", "dataset-tools")])
def test_version(module, prog):
    res = cli(module, "--version")
    assert res.returncode == 0 and re.fullmatch(rf"{prog} \d+\.\d+\.\d+\S*\n", res.stdout), res


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _missing_defaults(parser: argparse.ArgumentParser) -> list[str]:
    text = parser.format_help()
    missing = []
    for a in parser._actions:
        if not a.option_strings or a.default in (None, False, argparse.SUPPRESS) or a.default == []:
            continue
        if isinstance(a, argparse._VersionAction):
            continue
        opt = a.option_strings[0]
        block = text[text.index("\n  " + opt) + 1:]
        nxt = re.search(r"\n  -", block[1:])
        block = block[: nxt.start() + 1 if nxt else len(block)]
        if "default" not in block:
            missing.append(opt)
    return missing


def test_every_backend_subcommand_help_shows_defaults():
    subs = _subparsers(build_parser())
    assert {"train", "segment", "eval", "demo", "serve", "submit", "fetch", "keys"} <= set(subs)
    for name, p in subs.items():
        assert _missing_defaults(p) == [], name


def test_every_dataset_tools_subcommand_help_shows_defaults():
    from dataset_tools.cli import build_parser as dt_parser

    for name, p in _subparsers(dt_parser()).items():
        assert _missing_defaults(p) == [], name


def test_thresholds_comma_and_space_separated():
    p = build_parser()
    for argv in (["0.05,0.1,0.2"], ["0.05", "0.1", "0.2"], ["0.05 0.1", "0.2"], ["0.2,0.05", "0.1,0.1"]):
        assert p.parse_args(["segment", "RUN", "--thresholds", *argv]).thresholds == [0.05, 0.1, 0.2], argv
    sub = p.parse_args(["submit", "DATA", "--out", "O", "--thresholds", "0.05,0.3", "0.1"])
    assert sub.thresholds == [0.05, 0.1, 0.3]
    for bad in ("0", "2.5", "nan", "x", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            T.thresholds(bad)


def test_mask_source_and_masks_alias():
    p = build_parser()
    a = p.parse_args(["train", "D", "R", "--mask-source", "sam"])
    b = p.parse_args(["train", "D", "R", "--masks", "sam"])
    assert a.masks == b.masks == "sam"


def test_sam_error_names_the_flag():
    from backend.method.masks.errors import MaskSourceError
    from backend.method.masks.sam import SamConfig, load_sam

    try:
        load_sam(SamConfig(checkpoint=None))
    except MaskSourceError as e:
        assert "--sam-checkpoint" in str(e)
    else:  # pragma: no cover
        raise AssertionError("no error")


def _bar_text(events) -> str:
    buf = io.StringIO()
    bars = ProgressBars(True)
    old = sys.stderr
    sys.stderr = buf
    try:
        for e in events:
            bars(e)
            time.sleep(0.05)
        text = buf.getvalue()
        bars.close()
    finally:
        sys.stderr = old
    return text


def test_progress_rate_is_sensible_from_the_first_event():
    # a resumed training reports step 500 first: no "10000 step/s" from counting 500 steps in 0 s
    ev = [SimpleNamespace(stage="training", step=s, total=1000, message="", losses=None) for s in (500, 501, 502)]
    text = _bar_text(ev)
    rates = [float(r) for r in re.findall(r"([0-9.]+)step/s", text)]
    assert "?step/s" in text.split("\r")[1]  # the first update shows no rate yet
    assert rates and max(rates) < 100, text
