"""Reading the renderer's EXR passes on every supported Blender.

:mod:`dataset_tools.render` writes one multilayer EXR per render (Combined, Depth and Object Index passes,
32-bit float, ``exr_codec = "NONE"``). Two readers give the same ``{channel name: float32 [H, W]}``:

- OpenImageIO's Python module, when the Blender running this provides one (Blender 4.5 to 5.3 ship it in
  their own ``site-packages``, checked on 4.5.15, 5.0.1, 5.1.2, 5.2.4 and 5.3.0; Blender 4.2 has only the C++
  library, no Python module);
- otherwise :func:`read_exr_numpy`, a NumPy reader of uncompressed scanline EXR files, single- or multi-part
  (Blender 5.0 and later write multi-part). It returns the stored float32 values bit for bit (the same as
  OpenImageIO's on renders of each of those; the tests check it on this Blender), so depth keeps full float
  precision.

The file layout read here is OpenEXR's (openexr.com, "OpenEXR File Layout"): magic and version, header(s)
of typed attributes, one offset table per part, then one chunk per scanline block; an uncompressed block
is one scanline holding, per channel in the header's (alphabetical) order, ``width`` little-endian values.
"""

from __future__ import annotations

import importlib
import importlib.util
import struct
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from .errors import DatasetError

MAGIC = 20000630
#: Version-field flags (OpenEXR): single-part tiled, long names, deep data, multi-part.
TILED, LONG_NAMES, NON_IMAGE, MULTIPART = 0x200, 0x400, 0x800, 0x1000
#: OpenEXR compression codes; only NONE is read by NumPy.
COMPRESSION_NAMES = ("NONE", "RLE", "ZIPS", "ZIP", "PIZ", "PXR24", "B44", "B44A", "DWAA", "DWAB", "HTJ2K")
#: Pixel types: UINT, HALF, FLOAT.
PIXEL_DTYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}

Channels = dict[str, np.ndarray]


class UnreadableExr(DatasetError):
    """An EXR file that neither OpenImageIO (absent) nor the NumPy reader can read."""


# ------------------------------------------------------------------------------------------ OpenImageIO


def import_oiio() -> ModuleType | None:
    """OpenImageIO's Python module: importable directly inside Blender; with the bpy wheel it lives in
    Blender's own ``site-packages`` (4.5 and later). None when this Blender has none (4.2)."""
    try:
        return importlib.import_module("OpenImageIO")
    except ImportError:
        pass
    try:
        import bpy
    except ImportError:
        return None
    major, minor = bpy.app.version[:2]
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Path(bpy.utils.resource_path("LOCAL")) / "python" / "lib" / pyver / "site-packages" / "OpenImageIO",
                  Path(bpy.__file__).resolve().parent.parent / f"{major}.{minor}" / "python" / "lib" / pyver
                  / "site-packages" / "OpenImageIO"]
    for pkg in candidates:
        init = pkg / "__init__.py"
        if not init.is_file():
            continue
        spec = importlib.util.spec_from_file_location("OpenImageIO", init, submodule_search_locations=[str(pkg)])
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules["OpenImageIO"] = module
        try:
            spec.loader.exec_module(module)
        except ImportError:
            del sys.modules["OpenImageIO"]
            continue
        return module
    return None


def read_exr_oiio(path: str, oiio: ModuleType) -> Channels:
    """All parts of a (multi-part) EXR read with OpenImageIO, as ``{channel: float32 [H, W]}``."""
    inp = oiio.ImageInput.open(str(path))
    if inp is None:
        raise UnreadableExr(f"cannot read rendered EXR {path}: {oiio.geterror()}")
    out: Channels = {}
    try:
        sub = 0
        while inp.seek_subimage(sub, 0):
            spec = inp.spec()
            px = inp.read_image(oiio.FLOAT)
            if px is None:
                raise UnreadableExr(f"cannot read part {sub} of {path}: {inp.geterror()}")
            px = np.asarray(px, dtype=np.float32).reshape(spec.height, spec.width, spec.nchannels)
            for c, name in enumerate(spec.channelnames):
                out[name] = px[..., c]
            sub += 1
    finally:
        inp.close()
    return out


# ------------------------------------------------------------------------------------------ NumPy reader


class _Cursor:
    """Reads little-endian values from a bytes buffer, failing with :class:`UnreadableExr` past its end."""

    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise UnreadableExr(f"{self.path}: truncated EXR (needs {n} bytes at offset {self.pos})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise UnreadableExr(f"{self.path}: truncated EXR header")
        out = self.data[self.pos:end].decode("latin-1")
        self.pos = end + 1
        return out


def _read_header(cur: _Cursor) -> dict[str, tuple[str, bytes]]:
    """One header: ``{attribute name: (type name, value bytes)}``; empty for the multi-part terminator."""
    attrs: dict[str, tuple[str, bytes]] = {}
    while True:
        name = cur.cstring()
        if not name:
            return attrs
        kind = cur.cstring()
        (size,) = cur.unpack("i")
        attrs[name] = (kind, cur.take(size))


def _channel_list(value: bytes, path: str) -> list[tuple[str, np.dtype]]:
    """The ``chlist`` attribute: channel names and pixel types, in file order."""
    cur = _Cursor(value, path)
    out = []
    while True:
        name = cur.cstring()
        if not name:
            return out
        pixel_type, _linear, xs, ys = cur.unpack("iB3xii")
        if pixel_type not in (1, 2):
            raise UnreadableExr(f"{path}: channel {name!r} has pixel type {pixel_type} (UINT); only HALF and FLOAT "
                                f"are read without OpenImageIO")
        if (xs, ys) != (1, 1):
            raise UnreadableExr(f"{path}: channel {name!r} is subsampled ({xs}x{ys})")
        out.append((name, PIXEL_DTYPES[pixel_type]))


def _part_layout(header: dict[str, tuple[str, bytes]], path: str) -> tuple[list[tuple[str, np.dtype]], tuple, int]:
    """Channels, data window ``(xmin, ymin, xmax, ymax)`` and chunk count of one part (uncompressed scanlines)."""
    for key in ("channels", "compression", "dataWindow"):
        if key not in header:
            raise UnreadableExr(f"{path}: EXR header lacks {key!r}")
    kind = header.get("type", ("string", b"scanlineimage"))[1].rstrip(b"\0").decode("latin-1")
    if kind != "scanlineimage":
        raise UnreadableExr(f"{path}: EXR part of type {kind!r}; only scanline images are read without OpenImageIO")
    code = header["compression"][1][0]
    if code != 0:
        name = COMPRESSION_NAMES[code] if code < len(COMPRESSION_NAMES) else str(code)
        raise UnreadableExr(f"{path}: EXR compression {name}; without OpenImageIO only uncompressed EXR (NONE, as the "
                            f"renderer writes) is read")
    window = struct.unpack("<iiii", header["dataWindow"][1])
    height = window[3] - window[1] + 1
    chunks = struct.unpack("<i", header["chunkCount"][1])[0] if "chunkCount" in header else height
    return _channel_list(header["channels"][1], path), window, chunks


def read_exr_numpy(path: str) -> Channels:
    """All channels of an uncompressed scanline EXR (single- or multi-part) as ``{channel: float32 [H, W]}``.

    Raises :class:`UnreadableExr` (a :class:`DatasetError`) naming what it cannot read: compression other
    than NONE, tiled or deep parts, UINT or subsampled channels, truncated files.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UnreadableExr(f"cannot read rendered EXR {path}: {e}") from e
    cur = _Cursor(data, str(path))
    magic, version = cur.unpack("ii")
    if magic != MAGIC:
        raise UnreadableExr(f"{path} is not an EXR file")
    if version & (TILED | NON_IMAGE):
        raise UnreadableExr(f"{path}: tiled or deep EXR; only scanline images are read without OpenImageIO")
    multipart = bool(version & MULTIPART)
    headers = [_read_header(cur)]
    while multipart:
        header = _read_header(cur)
        if not header:
            break
        headers.append(header)
    layouts = [_part_layout(h, str(path)) for h in headers]
    offsets = [np.frombuffer(cur.take(8 * chunks), "<u8") for _, _, chunks in layouts]
    out: Channels = {}
    for part, ((channels, window, _), table) in enumerate(zip(layouts, offsets)):
        xmin, ymin, xmax, ymax = window
        width, height = xmax - xmin + 1, ymax - ymin + 1
        planes = {name: np.zeros((height, width), np.float32) for name, _ in channels}
        line_bytes = sum(width * dt.itemsize for _, dt in channels)
        for offset in table:
            cur.pos = int(offset)
            if multipart and cur.unpack("i")[0] != part:
                raise UnreadableExr(f"{path}: chunk at {offset} belongs to another part")
            y, size = cur.unpack("ii")
            if line_bytes == 0 or size % line_bytes:
                raise UnreadableExr(f"{path}: chunk of {size} bytes at {offset} is not whole uncompressed scanlines")
            block = cur.take(size)
            for line in range(size // line_bytes):
                row = y - ymin + line
                if not 0 <= row < height:
                    raise UnreadableExr(f"{path}: scanline {y + line} outside the data window")
                start = line * line_bytes
                for name, dt in channels:
                    n = width * dt.itemsize
                    planes[name][row] = np.frombuffer(block, dt, width, start)
                    start += n
        out.update(planes)
    return out


# ------------------------------------------------------------------------------------------ the choice


def read_exr_parts(path: str) -> Channels:
    """All channels of a rendered (multi-part) EXR as ``{channel: float32 [H, W]}`` (e.g.
    ``ViewLayer.Depth.Z``): with OpenImageIO when this Blender provides it, else with :func:`read_exr_numpy`."""
    oiio = import_oiio()
    return read_exr_oiio(path, oiio) if oiio is not None else read_exr_numpy(path)
