"""Requests -> the 28x28 bitmap the model sees: strokes through the training renderer, PNGs framed like it.

Strokes go through ``data.render`` unchanged (raw strokes are simplified first, as the official pipeline
does), so a drawing sent to the server gives the very bitmap the training data has.

A PNG has no strokes, only ink. It is framed the way ``data.render`` frames strokes, on the ink itself: the
ink's bounding box is the strokes' bounding box grown by half a line width on every side, so its long side
is mapped to ``SIMPLIFIED_MAX + LINE_WIDTH`` (271) units of the official frame, its centre to the bitmap's
centre (pixel 14.0 on each axis), and each output pixel takes the exact area average of the image pixels
it covers. A PNG drawn with the official line width (16/271 of the drawing's long side) therefore gives
nearly the bitmap its strokes give; a thinner or thicker line stays thinner or thicker, scaled with the
drawing. Ink is told from background by the image's border: a transparent border means the alpha channel
is the ink; an opaque one gives the background grey, and ink is the contrast with it (dark on light or light
on dark alike).
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
import zlib

import numpy as np

from ..data.render import LINE_WIDTH, SCALE, SIDE, SIMPLIFIED_MAX, render_strokes
from ..errors import QDMError

# Request limits: generous for any real drawing, tight enough that no request costs more than a fraction of
# a second (the worst cases measured: about 0.6 s for strokes, 0.3 s for a 2048x2048 PNG, on a busy core).
MAX_BODY_BYTES = 1_000_000
MAX_STROKES = 200
MAX_STROKE_POINTS = 5_000
MAX_POINTS = 20_000
MAX_ABS_COORDINATE = 1e6  # |x|, |y| of raw strokes (screen pixels)
MAX_ABS_TIME = 1e13  # |t| of raw strokes in milliseconds (epoch milliseconds fit)
MAX_IMAGE_SIDE = 2048
# Total stroke length once the drawing's long side is scaled to 0..255, the unit the official simplification
# resamples in: it bounds the work of resampling and rendering. The longest of the 9,570 real raw drawings of
# the project's test data measures about 36,000 (median 940).
MAX_PATH_LENGTH = 100_000

INK_THRESHOLD = 0.1  # ink (0..1) above which a PNG pixel counts for the bounding box (ignores faint noise)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The bit depths the PNG specification allows for each colour type (greyscale, RGB, palette, grey + alpha, RGBA).
PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


# ------------------------------------------------------------------------------------------------ strokes
def _numbers(row) -> np.ndarray | None:
    """A stroke's list as float64, or None when it is not plain numbers (``parse_drawing`` says why)."""
    try:
        return np.asarray(row, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None


def path_length(strokes: list[np.ndarray]) -> float:
    """Total length of (n, 2) strokes once the drawing is aligned and its long side scaled to 0..255."""
    points = np.concatenate(strokes)
    extent = float((points - points.min(axis=0)).max())
    if extent == 0:
        return 0.0
    return sum(float(np.hypot(*np.diff(s, axis=0).T).sum()) for s in strokes) * SIMPLIFIED_MAX / extent


def check_drawing_limits(drawing) -> None:
    """Stroke and point counts, coordinate ranges and path length. Malformed parts are skipped here: the
    structure is checked, with its own messages, by ``parse_drawing``."""
    if not isinstance(drawing, list):
        return
    if len(drawing) > MAX_STROKES:
        raise QDMError(f"drawing: {len(drawing)} strokes; at most {MAX_STROKES} are accepted")
    total = 0
    well_formed = []
    for number, stroke in enumerate(drawing, start=1):
        if not isinstance(stroke, list) or not stroke or not all(isinstance(row, list) for row in stroke):
            continue
        points = len(stroke[0])
        if points > MAX_STROKE_POINTS:
            raise QDMError(f"drawing: stroke {number} has {points} points; at most {MAX_STROKE_POINTS} are accepted")
        total += points
        if total > MAX_POINTS:
            raise QDMError(f"drawing: more than {MAX_POINTS} points in all")
        rows = [_numbers(row) for row in stroke[:3]]
        for values, name, bound in zip(rows, "xyt", (MAX_ABS_COORDINATE, MAX_ABS_COORDINATE, MAX_ABS_TIME),
                                       strict=False):
            if values is not None and values.size and not np.abs(values).max() <= bound:  # `not <=`: NaN too
                raise QDMError(f"drawing: stroke {number} has {name} values outside +-{bound:g} (or not finite)")
        if len(rows) >= 2 and all(r is not None and r.shape == (points,) for r in rows[:2]) and points:
            well_formed.append(np.stack(rows[:2], axis=1))
    if well_formed and (length := path_length(well_formed)) > MAX_PATH_LENGTH:
        raise QDMError(f"drawing: the strokes are {length:.0f} units long with the drawing scaled to "
                       f"0..{SIMPLIFIED_MAX}; at most {MAX_PATH_LENGTH} are accepted")


def bitmap_from_drawing(drawing, fmt: str = "auto") -> np.ndarray:
    """Validate strokes (official simplified or raw format) and render them: (784,) uint8, ink 255 on 0."""
    check_drawing_limits(drawing)
    return render_strokes(drawing, fmt)


# -------------------------------------------------------------------------------------------------- image
def _chunk_name(kind: bytes) -> str:
    return repr(kind.decode("ascii")) if kind.isalpha() else "0x" + kind.hex()


def png_structure_problem(data: bytes) -> str | None:
    """What is wrong with the structure of PNG bytes, in words, or None when it is sound: the signature, the
    IHDR header chunk (first, 13 bytes, its checksum and values), then chunks that fit in the file up to IEND,
    with image data (IDAT) among them. Pillow says "cannot identify image file <_io.BytesIO object at 0x...>"
    for most of these, which names neither the problem nor anything the client sent."""
    if not data.startswith(PNG_SIGNATURE):
        return "not a PNG file (it does not start with the PNG signature)"
    ihdr_end = len(PNG_SIGNATURE) + 8 + 13 + 4  # length, type, 13 bytes of data, CRC
    if len(data) < ihdr_end:
        return f"truncated PNG: {len(data)} bytes, less than the {ihdr_end} of its signature and header chunk"
    length, kind = struct.unpack(">I4s", data[8:16])
    if kind != b"IHDR" or length != 13:
        return (f"not a valid PNG: its first chunk is {_chunk_name(kind)} of {length} bytes, expected the "
                "13-byte 'IHDR' header chunk")
    if zlib.crc32(data[12:29]) != int.from_bytes(data[29:33], "big"):
        return "corrupt PNG: the checksum (CRC) of its 'IHDR' header chunk does not match"
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if not (width and height):
        return f"not a valid PNG: its header says {width}x{height} pixels"
    if depth not in PNG_DEPTHS.get(colour, ()):
        return f"not a valid PNG: colour type {colour} with bit depth {depth} does not exist"
    if compression or filtering or interlace > 1:
        return (f"not a valid PNG: unknown compression, filter or interlace method ({compression}, {filtering}, "
                f"{interlace}) in its header")
    offset, image_data = ihdr_end, False
    while True:  # each chunk: 4 bytes of length, 4 of type, the data, 4 of CRC; ends with IEND
        if offset + 8 > len(data):
            return f"truncated PNG: it ends at byte {len(data)}, before its 'IEND' chunk"
        length, kind = struct.unpack_from(">I4s", data, offset)
        if not kind.isalpha():
            return f"corrupt PNG: no valid chunk type at byte {offset} ({_chunk_name(kind)})"
        if offset + 12 + length > len(data):
            return (f"truncated PNG: its {_chunk_name(kind)} chunk at byte {offset} needs {12 + length} bytes, "
                    f"the file ends at byte {len(data)}")
        image_data = image_data or kind == b"IDAT"
        if kind == b"IEND":
            break
        offset += 12 + length
    return None if image_data else "not a valid PNG: it has no image data ('IDAT' chunk)"


def decode_png(text: str):
    """A base64 PNG (optionally a ``data:image/png;base64,`` URL) -> a loaded PIL image."""
    from PIL import Image

    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64") or header[5:].split(";")[0] not in ("image/png", ""):
            raise QDMError("image: a data URL must be 'data:image/png;base64,...'")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise QDMError(f"image: not valid base64 ({exc})") from exc
    problem = png_structure_problem(data)
    if problem is not None:
        raise QDMError(f"image: {problem}")
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG"])
        width, height = image.size
        if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
            raise QDMError(f"image: {width}x{height} pixels; at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} are accepted")
        image.load()
    except QDMError:
        raise
    except Image.UnidentifiedImageError as exc:  # its message is only the repr of our BytesIO
        raise QDMError("image: not a readable PNG (Pillow cannot identify it)") from exc
    except Exception as exc:  # a corrupt PNG can raise OSError, SyntaxError, ValueError, zlib.error, ...
        raise QDMError(f"image: not a readable PNG ({type(exc).__name__}: {exc})") from exc
    return image


def _border(array: np.ndarray) -> np.ndarray:
    return np.concatenate([array[0], array[-1], array[1:-1, 0], array[1:-1, -1]])


def ink_from_image(image) -> np.ndarray:
    """Ink coverage in [0, 1], float32 (H, W), from a PIL image of any mode (see the module docstring)."""
    if image.mode.startswith("I"):  # 16- or 32-bit grey: scale to 0..1 and treat as opaque
        values = np.asarray(image, dtype=np.float32)
        grey = values / (65535.0 if values.max() > 255 else 255.0)
        alpha = np.ones_like(grey)
    else:
        if "transparency" in image.info:  # a palette or colour key marks transparent pixels
            image = image.convert("RGBA")
        grey_alpha = np.asarray(image.convert("LA"), dtype=np.float32) / 255.0  # Pillow's ITU-R 601 luma
        grey, alpha = grey_alpha[..., 0], grey_alpha[..., 1]
    if np.median(_border(alpha)) < 0.5:  # transparent background: what is painted is the ink
        return alpha
    grey = grey * alpha + (1.0 - alpha)  # the odd translucent pixel is seen over white
    background = float(np.median(_border(grey)))
    dark_on_light = background >= 0.5
    ink = (background - grey) / background if dark_on_light else (grey - background) / (1.0 - background)
    return np.clip(ink, 0.0, 1.0)


def _area_average(ink: np.ndarray, start: float, step: float) -> np.ndarray:
    """Mean of ``ink`` (..., W) over the SIDE intervals ``[start + i*step, start + (i+1)*step)`` of its last
    axis, as exact integrals of the piecewise-constant pixels (prefix sums); beyond the image is empty."""
    width = ink.shape[-1]
    prefix = np.concatenate([np.zeros((*ink.shape[:-1], 1)), np.cumsum(ink, axis=-1, dtype=np.float64)], axis=-1)
    edges = np.clip(start + step * np.arange(SIDE + 1), 0.0, width)
    whole = edges.astype(np.int64)  # floor, as edges >= 0
    integral = prefix[..., whole] + (edges - whole) * ink[..., np.minimum(whole, width - 1)]
    return np.diff(integral, axis=-1) / step


def frame_ink(ink: np.ndarray) -> np.ndarray:
    """Ink (H, W) in [0, 1] -> (784,) uint8 framed like ``data.render`` frames strokes."""
    inked = ink > INK_THRESHOLD
    rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    if not len(rows):
        raise QDMError("image: no ink found (a blank image, or too faint)")
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    extent = max(bottom - top, right - left)
    # Source pixels per output pixel: the ink's long side spans the strokes' 255 units plus one line width.
    step = extent / ((SIMPLIFIED_MAX + LINE_WIDTH) * SCALE)
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    columns = _area_average(ink, centre_x - step * SIDE / 2, step)  # (H, SIDE)
    coverage = _area_average(columns.T, centre_y - step * SIDE / 2, step).T  # (SIDE, SIDE)
    return np.rint(np.clip(coverage, 0.0, 1.0) * 255).astype(np.uint8).reshape(-1)


def bitmap_from_png(text: str) -> np.ndarray:
    """A base64 PNG of a drawing -> (784,) uint8, ink 255 on 0, framed like the official bitmaps."""
    return frame_ink(ink_from_image(decode_png(text)))
