#!/usr/bin/env python3
"""Build the installable Blender extension zip: ``python3 scripts/build_addon.py dist/``.

1. Copies ``blender_addon/`` into a staging folder, leaving out caches.
2. Packs the add-on's share of this project into one pure-Python wheel (``ultrametric_seg_runtime``):
   the wire contract ``backend/wire/`` (protocol, result files, tree cut), ``backend/core/geometry.py``
   (the one camera convention) and ``dataset_tools/`` (rendering). The add-on imports them as
   ``backend.wire`` and ``dataset_tools``, exactly the files the development environment imports: one
   source of truth, no symlinks, no copies in the repository.
3. Bundles pyzmq as wheels: for each Blender platform and each Python that the supported Blender releases
   embed (:data:`BLENDER_PYTHONS`, from the manifest's ``blender_version_min`` on: 3.11 for 4.2 to 5.0,
   3.13 for 5.1 and later), it asks pip for the binary wheel of pyzmq :data:`BLENDER_PYZMQ`
   (``pip download pyzmq==<v> --only-binary=:all: --no-deps --platform ... --python-version ...``). Blender
   installs only the wheel that matches its own Python, so one zip serves Blender 4.2 LTS to 5.3.
   Why not the newest pyzmq: from 27.0 on pyzmq publishes ``cp312-abi3`` wheels for Python >= 3.12, and
   Blender derives an extension's Pythons from its wheel names, dropping a stable-ABI "any Python 3" as soon
   as a ``cp311`` wheel is present (``python_versions_from_wheels`` in Blender's ``blender_ext.py``): Blender
   5.3 then refuses the zip ("This Python version (3.13) isn't compatible with (3.11)"). 26.4.0 is the
   newest pyzmq with explicit ``cp311`` and ``cp313`` wheels on all four platforms; the build fails when
   the wheels found would be refused by one of the Blender Pythons. A platform is claimed only when every
   one of those Pythons has a wheel for it; with no pyzmq wheel at all the zip is built without pyzmq (the
   add-on then reports that pyzmq is missing) and the script says so.
4. Writes the manifest's ``platforms`` and ``wheels`` from the wheels found, and zips everything with
   ``blender_manifest.toml`` at the root: ``<out>/<id>-<version>.zip``.

Install the zip with Blender's extension installer (Edit > Preferences > Get Extensions > Install from
Disk), or headless: ``bpy.ops.extensions.package_install_files(filepath=ZIP, repo="user_default",
enable_on_install=True)``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "blender_addon"
MANIFEST = "blender_manifest.toml"

#: Blender platform -> pip ``--platform`` tag asked for (pip also accepts older compatible tags).
PLATFORM_TAGS: dict[str, str] = {
    "linux-x64": "manylinux_2_28_x86_64",
    "windows-x64": "win_amd64",
    "macos-arm64": "macosx_11_0_arm64",
    "macos-x64": "macosx_10_15_x86_64",
}
#: The Python each Blender release embeds (https://docs.blender.org/api/current/info_overview.html). The
#: wheels bundled serve every release from the manifest's ``blender_version_min`` on. A release with a new
#: Python needs a line here (and a pyzmq with a wheel for it); ``--python-versions`` overrides the table.
BLENDER_PYTHONS: dict[tuple[int, int], str] = {
    (4, 2): "3.11", (4, 3): "3.11", (4, 4): "3.11", (4, 5): "3.11", (5, 0): "3.11",
    (5, 1): "3.13", (5, 2): "3.13", (5, 3): "3.13",
}
#: pyzmq bundled for Blender (see step 3 above); ``--pyzmq-version`` overrides it. The job server may run any
#: pyzmq >= 26: ZeroMQ's wire protocol does not depend on it.
BLENDER_PYZMQ = "26.4.0"
EXCLUDE_DIRS = {"__pycache__", ".pytest_cache", "wheels", ".git"}
EXCLUDE_SUFFIXES = (".pyc", ".pyo", ".orig", ".rej")


class BuildError(RuntimeError):
    """The extension cannot be built (message says why)."""


def wheel_platforms(filename: str) -> set[str]:
    """Blender platforms a wheel file name serves (``universal2`` serves both macOS ones; pure
    ``any`` wheels serve all)."""
    tags = Path(filename).stem.split("-")[-1].split(".")
    out: set[str] = set()
    for tag in tags:
        if tag == "any":
            return set(PLATFORM_TAGS)
        if tag.startswith(("manylinux", "musllinux", "linux")):
            out.add("linux-x64" if tag.endswith("x86_64") else "linux-arm64" if tag.endswith("aarch64") else "")
        elif tag.startswith("macosx"):
            if tag.endswith(("universal2", "universal")):
                out |= {"macos-x64", "macos-arm64"}
            elif tag.endswith("arm64"):
                out.add("macos-arm64")
            elif tag.endswith("x86_64"):
                out.add("macos-x64")
        elif tag == "win_amd64":
            out.add("windows-x64")
        elif tag == "win_arm64":
            out.add("windows-arm64")
    out.discard("")
    return out


def python_versions(blender_version_min: str) -> list[str]:
    """The Pythons of the Blender releases from ``blender_version_min`` on (``"4.2.0"`` -> 3.11, 3.13)."""
    major_minor = tuple(int(x) for x in blender_version_min.split(".")[:2])
    return sorted({py for release, py in BLENDER_PYTHONS.items() if release >= major_minor},
                  key=lambda v: tuple(int(x) for x in v.split(".")))


def wheel_serves_python(filename: str, python: str) -> bool:
    """Whether the wheel ``filename`` installs on CPython ``python`` ("3.13"): its own ``cpXY``, a
    stable-ABI wheel built for an older or equal Python, or a pure ``py3`` wheel (PEP 425 tags)."""
    parts = Path(filename).stem.split("-")
    py_tags, abi_tags = parts[-3].split("."), parts[-2].split(".")
    want = tuple(int(x) for x in python.split("."))
    for tag in py_tags:
        m = re.fullmatch(r"(cp|py)(\d)(\d*)", tag)
        if not m:
            continue
        version = (int(m.group(2)), int(m.group(3))) if m.group(3) else (int(m.group(2)),)
        if len(version) == 1 and version[0] == want[0] and "none" in abi_tags:
            return True
        if version == want:
            return True
        if "abi3" in abi_tags and len(version) == 2 and version[0] == want[0] and version <= want:
            return True
    return False


def blender_refuses(wheels: list[str], python: str) -> bool:
    """Whether Blender on ``python`` refuses an extension with these wheels: it accepts when its ``X.Y`` or
    a bare ``X`` is among the Pythons of the wheel names, where a stable-ABI wheel counts as ``X`` and a
    bare ``X`` is dropped once any ``X.Y`` is present (Blender's ``python_versions_from_wheels``)."""
    major_minor: set[str] = set()
    major: set[str] = set()
    for w in wheels:
        parts = Path(w).stem.split("-")
        if any(t.startswith("abi") and t[3:].isdigit() for t in parts[-2].split(".")):
            major |= {t[3:] for t in parts[-2].split(".") if t.startswith("abi")}
            continue
        for tag in parts[-3].split("."):
            m = re.fullmatch(r"(?:cp|py)(\d)(\d*)", tag)
            if m and m.group(1) != "2":
                (major_minor.add(f"{m.group(1)}.{m.group(2)}") if m.group(2) else major.add(m.group(1)))
    major -= {v.split(".")[0] for v in major_minor}
    versions = major | major_minor
    return bool(versions) and python not in versions and python.split(".")[0] not in versions


def coverage_gaps(wheels: list[str], platforms: list[str], pythons: list[str]) -> list[tuple[str, str]]:
    """(platform, python) pairs no wheel in ``wheels`` serves."""
    return [(plat, py) for plat in platforms for py in pythons
            if not any(plat in wheel_platforms(w) and wheel_serves_python(w, py) for w in wheels)]


#: Files of this repository the add-on imports at run time (packed into the runtime wheel).
RUNTIME_FILES = ("backend/__init__.py", "backend/wire/*.py", "backend/core/__init__.py", "backend/core/geometry.py",
                 "dataset_tools/*.py")
RUNTIME_NAME = "ultrametric_seg_runtime"


def runtime_wheel(dest: Path, version: str) -> Path:
    """Write the pure-Python wheel of :data:`RUNTIME_FILES` (``py3-none-any``) into ``dest``; returns its path.

    A wheel is a zip with a ``.dist-info`` folder (PEP 427): METADATA, WHEEL and a RECORD of sha256 hashes.
    """
    import base64
    import hashlib

    files = sorted({p for pattern in RUNTIME_FILES for p in REPO.glob(pattern) if p.is_file()})
    if not files:
        raise BuildError("no runtime files found to pack")
    dist = f"{RUNTIME_NAME}-{version}.dist-info"
    meta = {
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {RUNTIME_NAME}\nVersion: {version}\n"
                            "Summary: wire protocol and dataset tools of the Ultrametric Segmentation add-on\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: build_addon.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    entries = [(p.relative_to(REPO).as_posix(), p.read_bytes()) for p in files]
    entries += [(name, text.encode()) for name, text in meta.items()]
    record = []
    for name, data in entries:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    entries.append((f"{dist}/RECORD", ("\n".join(record) + "\n").encode()))
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{RUNTIME_NAME}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return path


def copy_package(dst: Path) -> None:
    """Copy ``blender_addon/`` to ``dst`` (no symlinks allowed)."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in EXCLUDE_DIRS or n.endswith(EXCLUDE_SUFFIXES)}

    shutil.copytree(SOURCE, dst, symlinks=False, ignore=ignore)
    for p in dst.rglob("*"):
        if p.is_symlink():
            raise BuildError(f"a symlink survived the copy: {p}")


def download_wheels(dest: Path, version: str, platforms: list[str], pythons: list[str], log=print) -> list[Path]:
    """pyzmq ``version`` wheels for every (platform, Python) pair from pip's configured index/cache into ``dest``."""
    from concurrent.futures import ThreadPoolExecutor

    dest.mkdir(parents=True, exist_ok=True)

    def fetch(pair: tuple[str, str]) -> None:
        platform, python = pair
        cmd = [sys.executable, "-m", "pip", "download", f"pyzmq=={version}", "--only-binary=:all:", "--no-deps",
               "--platform", PLATFORM_TAGS[platform], "--python-version", python, "--implementation", "cp",
               "--disable-pip-version-check", "-q", "-d", str(dest / f"{platform}-{python}")]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            log(f"  no pyzmq {version} wheel for {platform}, Python {python}: {last}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(fetch, [(plat, py) for plat in platforms for py in pythons]))
    found: dict[str, Path] = {}
    for w in sorted(dest.glob("*/pyzmq-*.whl")):
        found.setdefault(w.name, w)  # one copy of a wheel serving several pairs (abi3, universal2)
    return [found[name] for name in sorted(found)]


def write_manifest(path: Path, wheels: list[str], platforms: list[str]) -> str:
    """Set the manifest's ``wheels`` and ``platforms`` lines (removed when there are no wheels)."""
    text = path.read_text()
    text = re.sub(r"(?m)^(platforms|wheels)\s*=.*\n", "", text)
    text = re.sub(r"(?m)^# Rewritten by .*\n", "", text)
    if wheels:
        lines = "platforms = [{}]\n".format(", ".join(f'"{p}"' for p in platforms)) if platforms else ""
        lines += "wheels = [\n{}]\n".format("".join(f'    "./wheels/{w}",\n' for w in wheels))
        text = re.sub(r"(?m)^(\[permissions\])", lines + "\n" + r"\1", text, count=1)
    path.write_text(text)
    return text


def manifest_field(text: str, key: str) -> str:
    m = re.search(rf'(?m)^{key}\s*=\s*"([^"]*)"', text)
    if not m:
        raise BuildError(f"{MANIFEST} lacks {key}")
    return m.group(1)


def zip_folder(folder: Path, zip_path: Path) -> None:
    """Zip ``folder``'s contents (sorted, fixed timestamps) with the manifest at the root."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                info = zipfile.ZipInfo(p.relative_to(folder).as_posix(), date_time=(2024, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_STORED if p.suffix == ".whl" else zipfile.ZIP_DEFLATED
                z.writestr(info, p.read_bytes())
    os.replace(tmp, zip_path)


def build(out_dir: Path, platforms: list[str] | None = None, with_wheels: bool = True,
          wheels_dir: Path | None = None, log=print, pythons: list[str] | None = None,
          pyzmq_version: str | None = None) -> Path:
    """Build the extension zip into ``out_dir``; returns its path. ``pythons``: the Pythons to bundle
    pyzmq for (default: those of the Blender releases the manifest supports, :func:`python_versions`)."""
    platforms = list(PLATFORM_TAGS) if platforms is None else platforms
    if unknown := [p for p in platforms if p not in PLATFORM_TAGS]:
        raise BuildError(f"unknown platforms {unknown}; choose from {list(PLATFORM_TAGS)}")
    if not (SOURCE / MANIFEST).is_file():
        raise BuildError(f"no {MANIFEST} in {SOURCE}")
    with tempfile.TemporaryDirectory(prefix="useg_build_") as tmp:
        stage = Path(tmp) / "pkg"
        copy_package(stage)
        source_text = (stage / MANIFEST).read_text()
        pythons = pythons or python_versions(manifest_field(source_text, "blender_version_min"))
        wheels: list[Path] = []
        if with_wheels:
            if wheels_dir is not None:
                wheels = sorted(Path(wheels_dir).glob("pyzmq-*.whl"))
            else:
                version = pyzmq_version or BLENDER_PYZMQ
                log(f"bundling pyzmq {version} wheels for {', '.join(platforms)}; Python {', '.join(pythons)}")
                wheels = download_wheels(Path(tmp) / "wheels", version, platforms, pythons, log)
        version = manifest_field((stage / MANIFEST).read_text(), "version")
        wheels.append(runtime_wheel(Path(tmp) / "runtime", version))
        if wheels:
            (stage / "wheels").mkdir()
            for w in wheels:
                shutil.copy2(w, stage / "wheels" / w.name)
        if with_wheels and not any(w.name.startswith("pyzmq") for w in wheels):
            log("WARNING: no pyzmq wheel available; the zip is built WITHOUT wheels "
                "(the add-on will report that pyzmq is missing unless Blender's Python has it)")
        binary = [w.name for w in wheels if not w.name.startswith(RUNTIME_NAME)]
        served: list[str] = []
        if refused := [py for py in pythons if blender_refuses(binary, py)]:
            raise BuildError(f"Blender with Python {', '.join(refused)} would refuse a zip with these wheels "
                             f"({', '.join(binary)}): bundle a pyzmq with explicit cpXY wheels (--pyzmq-version)")
        if binary:
            offered = sorted(set().union(*(wheel_platforms(w) for w in binary)) & set(platforms))
            gaps = coverage_gaps(binary, offered, pythons)
            for plat, py in gaps:
                log(f"WARNING: no pyzmq wheel for {plat} with Python {py}: {plat} is not claimed")
            served = [plat for plat in offered if plat not in {g[0] for g in gaps}]
        text = write_manifest(stage / MANIFEST, [w.name for w in wheels], served)
        zip_path = Path(out_dir) / f"{manifest_field(text, 'id')}-{manifest_field(text, 'version')}.zip"
        zip_folder(stage, zip_path)
    log(f"wrote {zip_path} ({zip_path.stat().st_size / 1e6:.1f} MB; wheels: {len(wheels)}; "
        f"platforms: {', '.join(served) or 'any'})")
    return zip_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", nargs="?", type=Path, default=REPO / "dist", help="folder for the zip (default dist/)")
    p.add_argument("--platforms", nargs="+", default=None, choices=list(PLATFORM_TAGS),
                   help="Blender platforms to bundle pyzmq for (default: all four)")
    p.add_argument("--no-wheels", action="store_true", help="build without pyzmq wheels")
    p.add_argument("--wheels-dir", type=Path, default=None, help="take pyzmq wheels from this folder instead of pip")
    p.add_argument("--python-versions", nargs="+", default=None, metavar="X.Y",
                   help="Pythons to bundle pyzmq for (default: those of the Blender releases from the manifest's "
                        "blender_version_min on, e.g. 3.11 3.13)")
    p.add_argument("--pyzmq-version", default=None, help=f"pyzmq to bundle (default {BLENDER_PYZMQ})")
    args = p.parse_args(argv)
    try:
        build(args.out_dir, args.platforms, not args.no_wheels, args.wheels_dir, pythons=args.python_versions,
              pyzmq_version=args.pyzmq_version)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
