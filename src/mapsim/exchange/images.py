"""Images <-> grids: PNG (Pillow) and TIFF (tifffile), one image pixel per grid pixel.

Import turns pixel values into class ids by, in this order of precedence:

1. a **class map** ``VALUE=CLASS,...`` where VALUE is a grey level (``255``) or a colour
   (``#1f1f1f``); every value in the image must be mapped;
2. **thresholds** ``t1 < t2 < ...`` on the grey level (colour images: luminance
   0.299 R + 0.587 G + 0.114 B): class = number of thresholds <= value (``invert``: the
   number above it), so one threshold makes pixels >= t1 class 1;
3. the colour table that mapsim's own PNG export stores in the file (exact round trip);
4. a **binary** image (two grey levels over all input images): the lower level is empty,
   the higher class 1 (``invert`` swaps).

Anything else is an error asking for a threshold or a class map. Values are in the image's own
units (0-255 for 8-bit, 0-65535 for 16-bit images). A multi-page TIFF gives one sample per page.

Export writes a palette PNG, one pixel per grid point, class ``k`` in colour :data:`PNG_COLOURS`
``[k]`` (empty white, particle near-black, solvent blue, ...), with the class names and colours in a
``mapsim`` text chunk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mapsim.errors import MapsimError
from mapsim.exchange.common import EMPTY, Sample, class_order

__all__ = ["PNG_COLOURS", "IMAGE_SUFFIXES", "read_image", "import_images", "grid_to_png", "parse_class_map"]

#: Colour of class id k in exported PNGs (the first three match ``mapsim simulate --png``).
PNG_COLOURS: tuple[str, ...] = (
    "#ffffff", "#1f1f1f", "#6baed6", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#1f77b4", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2",
)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")

_TEXT_KEY = "mapsim"


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def read_image(path: str | Path) -> tuple[list[np.ndarray], bool, dict[str, Any] | None]:
    """Read a PNG or TIFF into frames.

    Returns
    -------
    frames : list of arrays
        Grey images (H, W) of their stored dtype, or colour images (H, W, 3); alpha is dropped.
    colour : bool
    meta : dict or None
        The ``mapsim`` text chunk of a PNG written by :func:`grid_to_png`.

    Raises
    ------
    MapsimError
        Naming the file when it is missing, not an image of its suffix, or corrupt.
    """
    p = Path(path)
    if not p.exists():
        raise MapsimError(f"{p}: file not found")
    if p.is_dir():
        raise MapsimError(f"{p}: expected an image file, found a directory")
    suffix = p.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            frames, colour = _read_tiff(p)
            meta = None
        else:
            frames, colour, meta = _read_pillow(p)
    except MapsimError:
        raise
    except Exception as exc:  # any decoder failure on a user's file is a bad input
        kind = "TIFF" if suffix in (".tif", ".tiff") else "PNG"
        raise MapsimError(f"{p}: not a readable {kind} image ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    for f in frames:
        if f.ndim not in (2, 3) or 0 in f.shape[:2]:
            raise MapsimError(f"{p}: image of shape {f.shape}; expected (H, W) grey or (H, W, 3|4) colour")
        if f.dtype.kind not in "uif" or (f.dtype.kind == "f" and not np.all(np.isfinite(f))):
            raise MapsimError(f"{p}: pixel values of dtype {f.dtype} (or not finite); expected numbers")
    return frames, colour, meta


def _read_pillow(p: Path):
    from PIL import Image

    with Image.open(p) as img:
        img.load()
        meta = None
        text = getattr(img, "text", {}) or {}
        if _TEXT_KEY in text:
            try:
                meta = json.loads(text[_TEXT_KEY])
                classes, colours = list(meta["classes"]), list(meta["colours"])
                if len(classes) != len(colours) or not classes:
                    raise ValueError("classes and colours differ in length")
                meta = {"classes": [str(c) for c in classes], "colours": [str(c).lower() for c in colours]}
            except (ValueError, KeyError, TypeError) as exc:
                raise MapsimError(f"{p}: 'mapsim' text chunk not understood ({exc})") from None
        n = getattr(img, "n_frames", 1)
        if n > 1:
            raise MapsimError(f"{p}: animated image with {n} frames; expected a single image")
        mode = img.mode
        if mode in ("1", "L", "LA"):
            arr = np.array(img.convert("L"))
            return [arr], False, meta
        if mode.startswith("I") or mode == "F":
            return [np.array(img)], False, meta
        arr = np.array(img.convert("RGB"))
        return [arr], True, meta


def _read_tiff(p: Path):
    import tifffile

    with tifffile.TiffFile(p) as tf:
        if not tf.series:
            raise MapsimError(f"{p}: TIFF holds no image")
        series = tf.series[0]
        arr = series.asarray()
        axes = series.axes
    colour = axes.endswith("S") and arr.ndim >= 3 and arr.shape[-1] in (3, 4)
    if colour:
        arr = arr[..., :3].reshape((-1, *arr.shape[-3:-1], 3))
    else:
        if arr.ndim < 2:
            raise MapsimError(f"{p}: TIFF image of shape {arr.shape} (axes {axes}); expected at least 2-D")
        arr = arr.reshape((-1, *arr.shape[-2:]))
    return [np.asarray(a) for a in arr], bool(colour)


def parse_class_map(pairs: dict[str, str]) -> tuple[dict[Any, str], bool]:
    """``{"255": "particle", "#ff0000": "solvent"}`` -> ({key: class}, any_colour_keys).

    Keys become floats (grey levels) or (r, g, b) tuples (colours ``#rrggbb``).
    """
    out: dict[Any, str] = {}
    colour_keys = False
    for key, name in pairs.items():
        if key.startswith("#"):
            if len(key) != 7 or any(c not in "0123456789abcdefABCDEF" for c in key[1:]):
                raise MapsimError(f"--class-map {key}={name}: expected a colour #rrggbb")
            out[_rgb(key)] = name
            colour_keys = True
        else:
            try:
                out[float(key)] = name
            except ValueError:
                raise MapsimError(f"--class-map {key}={name}: expected a grey level or #rrggbb colour") from None
    return out, colour_keys


def _luminance(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    f = frame.astype(np.float64)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _apply_lookup(frame: np.ndarray, lookup: dict[Any, int], where: str) -> np.ndarray:
    """Class ids through an exact value -> id table; every value must be present."""
    if frame.ndim == 3:
        code = (frame[..., 0].astype(np.int64) << 32) | (frame[..., 1].astype(np.int64) << 16) | frame[..., 2].astype(np.int64)
        table = {}
        for key, k in lookup.items():
            rgb = key if isinstance(key, tuple) else (key, key, key)
            table[(int(rgb[0]) << 32) | (int(rgb[1]) << 16) | int(rgb[2])] = k
        values, inverse = np.unique(code, return_inverse=True)
        ids = np.empty(values.size, np.int64)
        for n, v in enumerate(values):
            if int(v) not in table:
                r, g, b = int(v) >> 32, (int(v) >> 16) & 0xFFFF, int(v) & 0xFFFF
                count = int(np.count_nonzero(code == v))
                raise MapsimError(f"{where}: colour ({r}, {g}, {b}) on {count} pixel(s) is not in the class map")
            ids[n] = table[int(v)]
        return ids[inverse].reshape(frame.shape[:2]).astype(np.uint8)
    table = {}
    for key, k in lookup.items():
        if isinstance(key, tuple):
            if not key[0] == key[1] == key[2]:
                continue  # a colour cannot occur in a grey image
            key = key[0]
        table[float(key)] = k
    values, inverse = np.unique(frame, return_inverse=True)
    ids = np.empty(values.size, np.int64)
    for n, v in enumerate(values):
        if float(v) not in table:
            count = int(np.count_nonzero(frame == v))
            raise MapsimError(f"{where}: grey level {v:g} on {count} pixel(s) is not in the class map")
        ids[n] = table[float(v)]
    return ids[inverse].reshape(frame.shape).astype(np.uint8)


def import_images(
    paths: Sequence[str | Path],
    *,
    thresholds: Sequence[float] | None = None,
    invert: bool = False,
    class_map: dict[str, str] | None = None,
    class_names: Sequence[str] | None = None,
    progress: Callable[[int], object] | None = None,
) -> tuple[list[Sample], tuple[str, ...], dict[str, Any]]:
    """Read images and turn their pixels into class ids (rules in the module docstring).

    Parameters
    ----------
    paths : sequence of path-like
    thresholds : sequence of float, optional
        Increasing grey-level thresholds.
    invert : bool
        Dark pixels get the higher classes.
    class_map : dict, optional
        ``{"VALUE": "CLASS"}`` with VALUE a grey level or ``#rrggbb``.
    class_names : sequence of str, optional
        Names of classes 1, 2, ... for thresholds / binary images (default ``particle``,
        ``solvent``, then ``class3``, ...).
    progress : callable, optional
        Called with 1 after each file is read.

    Returns
    -------
    samples, classes, info
    """
    loaded = []
    for p in paths:
        loaded.append((str(p), *read_image(p)))
        if progress is not None:
            progress(1)

    def names_for(n_nonempty: int) -> tuple[str, ...]:
        if class_names:
            if len(class_names) != n_nonempty:
                raise MapsimError(f"--classes: {n_nonempty} non-empty class name(s) needed, found {list(class_names)}")
            return class_order(list(class_names))
        default = ["particle", "solvent"] + [f"class{k}" for k in range(3, n_nonempty + 1)]
        return class_order(default[:n_nonempty])

    if class_map:
        lookup_named, _ = parse_class_map(class_map)
        classes = class_order([c for c in lookup_named.values() if c != EMPTY])
        lookup = {k: classes.index(c) for k, c in lookup_named.items()}
        rule = "class map"
    elif thresholds:
        ts = np.asarray(list(thresholds), float)
        if ts.ndim != 1 or not np.all(np.isfinite(ts)) or np.any(np.diff(ts) <= 0):
            raise MapsimError(f"--threshold: expected increasing finite numbers, found {list(thresholds)}")
        classes = names_for(ts.size)
        rule = "thresholds"
    elif all(meta is not None for _, _, _, meta in loaded):
        classes = tuple(loaded[0][3]["classes"])
        for path, _, _, meta in loaded[1:]:
            if tuple(meta["classes"]) != classes:
                raise MapsimError(f"{path}: classes {meta['classes']} differ from {loaded[0][0]}'s {list(classes)}")
        rule = "mapsim colours"
    else:
        levels = np.unique(np.concatenate([np.unique(_luminance(f)) for _, frames, _, _ in loaded for f in frames]))
        if levels.size != 2:
            paths_txt = ", ".join(p for p, *_ in loaded)
            raise MapsimError(f"{paths_txt}: {levels.size} grey level(s) in the image(s); an image is read without "
                              "options only when it is binary (2 levels) or written by mapsim export; give "
                              "--threshold T or --class-map VALUE=CLASS,...")
        ts = np.array([levels[1]], float)
        classes = names_for(1)
        rule = "binary"

    samples = []
    for path, frames, colour, meta in loaded:
        for i, frame in enumerate(frames):
            where = f"{path} frame {i}" if len(frames) > 1 else path
            if rule == "class map":
                grid = _apply_lookup(frame, lookup, where)
            elif rule == "mapsim colours":
                lut = {_rgb(c): k for k, c in enumerate(meta["colours"])}
                grid = _apply_lookup(frame if colour else np.repeat(frame[..., None], 3, axis=2), lut, where)
            else:
                lum = _luminance(frame)
                k = np.searchsorted(ts, lum, side="right")
                grid = (ts.size - k if invert else k).astype(np.uint8)
            samples.append(Sample(grid, {"file": path, "frame": i, "kind": "image", "colour": bool(colour),
                                         "dtype": str(frame.dtype), "shape": list(grid.shape)}))
    info: dict[str, Any] = {"class_rule": rule, "invert": bool(invert)}
    if rule in ("thresholds", "binary"):
        info["thresholds"] = [float(t) for t in ts]
    if rule == "class map":
        info["class_map"] = dict(class_map)
    return samples, classes, info


def grid_to_png(grid: np.ndarray, classes: Sequence[str], path: str | Path, info: dict[str, Any] | None = None) -> None:
    """Write one (H, W) grid as a palette PNG, one pixel per grid point, fixed colour per class.

    The class names and colours go into a ``mapsim`` text chunk, so :func:`import_images`
    rebuilds the grid exactly.
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    n = len(classes)
    if n > len(PNG_COLOURS):
        raise MapsimError(f"{n} classes: PNG export has fixed colours for at most {len(PNG_COLOURS)}")
    g = np.ascontiguousarray(grid, np.uint8)
    img = Image.frombytes("P", (g.shape[1], g.shape[0]), g.tobytes())
    palette = []
    for c in PNG_COLOURS[:n]:
        palette += list(_rgb(c))
    img.putpalette(palette)
    text = PngInfo()
    text.add_text(_TEXT_KEY, json.dumps({"classes": list(classes), "colours": list(PNG_COLOURS[:n]), **(info or {})}))
    img.save(path, format="PNG", pnginfo=text)
