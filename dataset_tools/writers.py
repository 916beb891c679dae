"""File formats of the Blender-HS folder: PNG, TIFF, NPY and JSON, written atomically.

Dependency-free (NumPy + standard library) so it also runs inside Blender, where Pillow and tifffile
are absent. Writers produce deterministic bytes (identical arrays give identical files), which makes
resumed renders byte-identical to uninterrupted ones. The readers understand the files written here
(and baseline, unfiltered-or-filtered 8/16-bit PNGs; single-strip or multi-strip uncompressed TIFFs).

Every writer goes through :func:`atomic_write`: the bytes go to a temporary file in the same folder,
which is then renamed over the target, so an interruption never leaves a half-written file in place.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from backend.wire.files import write_atomic

from .errors import DatasetError

_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling file and an atomic rename."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise DatasetError(f"cannot write {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------- PNG


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 or uint16 image [H, W] (grey), [H, W, 3] (RGB) or [H, W, 4] (RGBA)."""
    img = np.asarray(image)
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG needs uint8 or uint16, got {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    h, w, c = img.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    depth = 8 if img.dtype == np.uint8 else 16
    raw = img.astype(">u2") if depth == 16 else img
    rows = raw.reshape(h, -1).view(np.uint8).reshape(h, -1)
    # 'Up' filter (type 2): each byte minus the byte above; vectorised and compresses well.
    up = rows.copy()
    up[1:] = rows[1:] - rows[:-1]
    data = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    return _PNG_SIG + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(data, 6)) + _chunk(b"IEND", b"")


def _unfilter(kind: int, line: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    if kind == 0:
        return line
    if kind == 2:
        return line + prev
    out = line.astype(np.int32)
    prev = prev.astype(np.int32)
    for i in range(out.size):
        a = out[i - bpp] if i >= bpp else 0
        if kind == 1:
            out[i] = (out[i] + a) & 255
        elif kind == 3:
            out[i] = (out[i] + ((a + prev[i]) >> 1)) & 255
        elif kind == 4:
            b, cc = prev[i], prev[i - bpp] if i >= bpp else 0
            p = a + b - cc
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
            out[i] = (out[i] + pred) & 255
        else:
            raise ValueError(f"bad PNG filter {kind}")
    return out.astype(np.uint8)


def decode_png(data: bytes) -> np.ndarray:
    """Decode a non-interlaced 8/16-bit grey/grey-alpha/RGB/RGBA PNG to [H, W] or [H, W, C]."""
    if data[:8] != _PNG_SIG:
        raise ValueError("not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        payload = data[pos + 8:pos + 8 + length]
        if len(payload) != length:
            raise ValueError("truncated PNG")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat.append(payload)
        elif kind == b"IEND":
            break
        pos += 12 + length
    else:
        raise ValueError("truncated PNG (no IEND)")
    if header is None:
        raise ValueError("PNG without IHDR")
    w, h, depth, colour_type, _, _, interlace = header
    if interlace or depth not in (8, 16) or colour_type not in (0, 2, 4, 6):
        raise ValueError("unsupported PNG variant")
    c = {0: 1, 4: 2, 2: 3, 6: 4}[colour_type]
    bpp = c * depth // 8
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    stride = w * bpp
    if raw.size != h * (stride + 1):
        raise ValueError("PNG data size mismatch")
    raw = raw.reshape(h, stride + 1)
    out = np.empty((h, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for i in range(h):
        prev = out[i] = _unfilter(int(raw[i, 0]), raw[i, 1:], prev, bpp)
    img = out.view(">u2").astype(np.uint16) if depth == 16 else out
    img = img.reshape(h, w, c)
    return img[..., 0] if c == 1 else img


def write_png(path: str | Path, image: np.ndarray) -> None:
    atomic_write(path, encode_png(image))


def read_png(path: str | Path) -> np.ndarray:
    return decode_png(Path(path).read_bytes())


# ---------------------------------------------------------------------------------------------- TIFF


def encode_tiff(image: np.ndarray) -> bytes:
    """Uncompressed little-endian TIFF of a uint8/uint16/uint32 image [H, W] or [H, W, C] (one strip)."""
    img = np.ascontiguousarray(image)
    if img.dtype not in (np.uint8, np.uint16, np.uint32):
        raise ValueError(f"TIFF writer needs uint8/16/32, got {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    h, w, c = img.shape
    bits = img.dtype.itemsize * 8
    pixels = img.astype(img.dtype.newbyteorder("<"), copy=False).tobytes()
    entries = []  # (tag, type, count, value-bytes)
    def short(tag, values):
        entries.append((tag, 3, len(values), struct.pack(f"<{len(values)}H", *values)))
    def long(tag, values):
        entries.append((tag, 4, len(values), struct.pack(f"<{len(values)}I", *values)))
    long(256, [w])
    long(257, [h])
    short(258, [bits] * c)
    short(259, [1])  # no compression
    short(262, [2 if c >= 3 else 1])  # RGB or min-is-black
    long(273, [0])  # strip offset, patched below
    short(277, [c])
    long(278, [h])
    long(279, [len(pixels)])
    short(284, [1])
    if c not in (1, 3):
        short(338, [0] * (c - 3 if c > 3 else c - 1))  # extra samples: unspecified
    short(339, [1] * c)  # unsigned integer samples
    entries.sort(key=lambda e: e[0])
    n = len(entries)
    ifd_size = 2 + 12 * n + 4
    extra_start = 8 + ifd_size
    extra = b""
    offsets = {}
    for tag, typ, count, value in entries:
        if len(value) > 4:
            offsets[tag] = extra_start + len(extra)
            extra += value + (b"\0" if len(value) % 2 else b"")
    pixel_offset = extra_start + len(extra)
    ifd = struct.pack("<H", n)
    for tag, typ, count, value in entries:
        if tag == 273:
            value = struct.pack("<I", pixel_offset)
        if len(value) > 4:
            ifd += struct.pack("<HHII", tag, typ, count, offsets[tag])
        else:
            ifd += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\0")
    ifd += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 8) + ifd + extra + pixels


def decode_tiff(data: bytes) -> np.ndarray:
    """Read an uncompressed little-endian integer TIFF written by :func:`encode_tiff` (or alike)."""
    if data[:4] != b"II*\0":
        raise ValueError("not a little-endian TIFF")
    (ifd_off,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd_off:ifd_off + 2])
    tags = {}
    for k in range(n):
        tag, typ, count = struct.unpack("<HHI", data[ifd_off + 2 + 12 * k: ifd_off + 10 + 12 * k])
        size = {3: 2, 4: 4}.get(typ)
        if size is None:
            continue
        raw = data[ifd_off + 10 + 12 * k: ifd_off + 14 + 12 * k]
        if size * count > 4:
            (off,) = struct.unpack("<I", raw)
            raw = data[off: off + size * count]
        tags[tag] = struct.unpack(f"<{count}{'H' if size == 2 else 'I'}", raw[:size * count])
    if tags.get(259, (1,))[0] != 1:
        raise ValueError("compressed TIFF not supported")
    w, h, c = tags[256][0], tags[257][0], tags.get(277, (1,))[0]
    dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32}[tags[258][0]]
    pixels = b"".join(data[o:o + s] for o, s in zip(tags[273], tags[279]))
    img = np.frombuffer(pixels, dtype=np.dtype(dtype).newbyteorder("<"))
    if img.size != h * w * c:
        raise ValueError("truncated TIFF")
    img = img.reshape(h, w, c).astype(dtype)
    return img[..., 0] if c == 1 else img


def write_tiff(path: str | Path, image: np.ndarray) -> None:
    atomic_write(path, encode_tiff(image))


def read_tiff(path: str | Path) -> np.ndarray:
    return decode_tiff(Path(path).read_bytes())


# ---------------------------------------------------------------------------------------------- NPY / JSON


def write_npy(path: str | Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write(path, buf.getvalue())


def read_npy(path: str | Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def write_json(path: str | Path, data) -> None:
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- dataset images


def depth_to_png8(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """The released 8-bit depth picture: 255 at ``near`` down to 1 at ``far``, 0 for background."""
    d = np.asarray(depth, dtype=np.float64)
    t = np.clip((d - near) / max(far - near, 1e-9), 0.0, 1.0)
    out = np.rint(255.0 - 254.0 * t).astype(np.uint8)
    out[d <= 0] = 0
    return out


#: Largest depth (world units, read as metres) a millimetre PNG holds; farther pixels are written as 0.
PNG16_MM_MAX_DEPTH = 65.535


def depth_to_png16_mm(depth: np.ndarray) -> np.ndarray:
    """Planar depth in metres -> uint16 millimetres (nerfstudio's default ``depth_unit_scale_factor`` 1e-3).

    0 stays 0 (background, "no depth" to nerfstudio); depth beyond 65.535 m is also written as 0.
    """
    d = np.asarray(depth, dtype=np.float64)
    mm = np.rint(d * 1000.0)
    ok = (d > 0) & np.isfinite(d) & (mm <= 65535)
    return np.where(ok, mm, 0).astype(np.uint16)


def seg_tiff_image(level_ids: np.ndarray) -> np.ndarray:
    """A Blender-HS seg image: uint16 [H, W, 3] with the id in every channel (channel 0 is the contract)."""
    ids = np.asarray(level_ids, dtype=np.uint16)
    return np.repeat(ids[..., None], 3, axis=-1)
