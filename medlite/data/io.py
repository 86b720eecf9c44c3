"""Read one medical or ordinary image file into the array every medlite model input starts from.

Contract of :func:`read_image`: a C-contiguous ``float32`` array in ``[0, 1]``, shape ``(H, W)`` for grey
images and ``(H, W, 3)`` for colour (RGB) images, finite everywhere. How each format gets there:

- PNG / JPEG / BMP / TIFF (Pillow): 8-bit data / 255; 16-bit data / 65535 (the container's bit depth,
  not min-max, so the same grey value always means the same intensity); 1-bit data as 0 / 1; float TIFFs
  as stored if already in [0, 1], else min-max (16-bit colour PNGs arrive as 8 bits: Pillow reduces them).
  Alpha is dropped, palettes are expanded to RGB, the EXIF orientation of photographs is applied,
  multi-page files give their first page.
- DICOM (pydicom >= 3, lazily imported): the modality transform (a Modality LUT Sequence through pydicom's
  ``apply_modality_lut``, else RescaleSlope / RescaleIntercept, also from enhanced multi-frame functional
  groups) first, then a VOI LUT Sequence (pydicom's ``apply_voi_lut``, preferred over a window as pydicom
  does), else the VOI window (first WindowCenter / WindowWidth value, LINEAR / LINEAR_EXACT / SIGMOID as
  the file's VOILUTFunction says) when the file has one, else min-max over the frame; MONOCHROME1 is inverted
  so that high values are bright; colour (RGB, YBR, palette) files give RGB scaled by their bit depth;
  multi-frame files give the middle frame unless ``index`` says otherwise. Files without an extension (or
  with an unknown one) are read as DICOM when they carry the ``DICM`` magic.
- NIfTI (``.nii`` / ``.nii.gz``, nibabel, lazily imported): one axial slice, ``index`` counted from
  inferior to superior as in nibabel's canonical RAS+ volume (``as_closest_canonical``; default the middle
  one; a 4-D file with one volume reads it, more are refused), scl_slope / scl_inter applied, then min-max
  over the slice. Only that slice is read from disk; it equals the canonical volume's axial slice shown as
  an axial DICOM image: anterior at the top, the patient's right on the image's left (radiological
  convention; tests/data/test_io.py checks it against nibabel for every axis order and flip).

The slice / frame can also be given in the path: ``"ct.nii.gz::40"``, ``"cine.dcm::0"``.

Every failure raises :class:`ImageReadError` (a ``ValueError``) whose message names the file and says
what is wrong: missing, empty, unsupported extension, corrupt / truncated, undecodable, NaN or infinite
values, no pixel data.

:func:`to_model_input` turns that array into a model input with numpy and Pillow only (no torch), so the
torch-free runtime (``medlite.export.runtime``) and the PyTorch path preprocess identically.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medlite.errors import MedliteError

PIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_EXTENSIONS = (".dcm", ".dicom")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
SUPPORTED_EXTENSIONS = PIL_EXTENSIONS + DICOM_EXTENSIONS + NIFTI_EXTENSIONS
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's convert("L")


class ImageReadError(MedliteError, ValueError):
    """An image file that cannot be read; the message names the file and the problem."""


def read_image(path: str | os.PathLike, index: int | None = None) -> np.ndarray:
    """Read a PNG, JPEG, BMP, TIFF, DICOM or NIfTI file (see the module docstring for each format).

    Args:
        path: the file; ``"<file>::<n>"`` selects slice / frame ``n`` like ``index``.
        index: NIfTI: axial slice; multi-frame DICOM: frame (0-based). None: the middle one.

    Returns:
        (H, W) grey or (H, W, 3) RGB float32 in [0, 1].

    Raises:
        ImageReadError: the file is missing, empty, of an unsupported type, corrupt or holds NaN / inf.
    """
    path, index = _split_index(path, index)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    kind = image_kind(path)
    if kind == "pil":
        img = _read_pil(path)
    elif kind == "dicom":
        img = _read_dicom(path, index)
    else:
        img = _read_nifti(path, index)
    return _check_output(path, img)


def sniff_kind(data: bytes) -> str | None:
    """``"pil"``, ``"dicom"``, ``"nifti"`` or ``"gzip"`` (a compressed NIfTI) from a file's first bytes."""
    import struct

    head = data[:348]
    if len(head) >= 132 and head[128:132] == b"DICM":  # first: a DICOM preamble may itself look like a TIFF
        return "dicom"
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*")):
        return "pil"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(head) >= 4 and {struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]} & {348, 540}:
        return "nifti"
    return None


def read_image_bytes(data: bytes, name: str = "upload", index: int | None = None,
                     max_bytes: int = 512 * 2**20) -> np.ndarray:
    """:func:`read_image` for a file held in memory (an upload): the type comes from the content, never the
    name, and nothing is written to disk.

    Args:
        data: the file's bytes; name: the client's file name, used in messages only (never opened);
        index: as for :func:`read_image`; max_bytes: cap on a decompressed ``.nii.gz``.
    Raises:
        ImageReadError: empty, of an unsupported type, corrupt, too large once decompressed, NaN / inf.
    """
    import io
    import zlib

    label = Path(Path(str(name)).name or "upload")
    if not data:
        raise ImageReadError(f"{label}: empty file (0 bytes)")
    kind = sniff_kind(data)
    if kind == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = d.decompress(data, max_bytes + 1)
        except zlib.error as e:
            raise ImageReadError(f"{label}: corrupt gzip data ({e})") from e
        if len(data) > max_bytes:
            raise ImageReadError(f"{label}: decompresses to more than {max_bytes // 2**20} MB, refused")
        kind = "nifti" if sniff_kind(data) == "nifti" else None
    if kind == "pil":
        img = _read_pil(label, io.BytesIO(data))
    elif kind == "dicom":
        img = _read_dicom(label, index, io.BytesIO(data))
    elif kind == "nifti":
        img = _read_nifti(label, index, data)
    else:
        raise ImageReadError(f"{label}: not an image medlite reads (PNG, JPEG, BMP, TIFF, DICOM or NIfTI)")
    return _check_output(label, img)


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """A :func:`read_image` result ((H, W) or (H, W, 3) float32 in [0, 1]) -> (H, W, 3) uint8, grey repeated."""
    a = np.round(np.asarray(img) * 255.0).astype(np.uint8)
    return np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a


def image_kind(path: str | os.PathLike) -> str:
    """``"pil"``, ``"dicom"`` or ``"nifti"`` from the extension (DICOM also by its magic bytes).

    Raises:
        ImageReadError: unsupported extension and no DICOM magic.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(NIFTI_EXTENSIONS):
        return "nifti"
    suffix = path.suffix.lower()
    if suffix in PIL_EXTENSIONS:
        return "pil"
    if suffix in DICOM_EXTENSIONS or _has_dicom_magic(path):
        return "dicom"
    what = f"extension '{suffix}'" if suffix else "file without extension (and not DICOM)"
    raise ImageReadError(f"{path}: unsupported {what}; supported: {', '.join(SUPPORTED_EXTENSIONS)}")


def _split_index(path: str | os.PathLike, index: int | None) -> tuple[Path, int | None]:
    text = os.fspath(path)
    if "::" in text and not Path(text).exists():
        text, _, tail = text.rpartition("::")
        try:
            from_path = int(tail)
        except ValueError as e:
            raise ImageReadError(f"{path}: '::{tail}' is not a slice / frame number") from e
        if index is not None and index != from_path:
            raise ImageReadError(f"{path}: index {index} contradicts '::{tail}' in the path")
        index = from_path
    return Path(text), index


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _check_output(path: Path, img: np.ndarray) -> np.ndarray:
    if img.size == 0 or min(img.shape[:2]) == 0:
        raise ImageReadError(f"{path}: empty image (shape {img.shape})")
    if not np.isfinite(img).all():
        raise ImageReadError(f"{path}: image holds NaN or infinite values")
    return np.ascontiguousarray(np.clip(img, 0.0, 1.0), dtype=np.float32)


def _minmax(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the finite minimum / maximum; a constant image gives zeros."""
    x = x.astype(np.float32, copy=False)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return x  # all NaN / inf: _check_output reports it
    lo, hi = float(finite.min()), float(finite.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


# ----------------------------------------------------------------------------------------------- Pillow
def _read_pil(path: Path, fp=None) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # a huge declared size is refused, not half-decoded into black
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if fp is None else fp) as im:
                im.load()
                if im.format in ("JPEG", "MPO", "TIFF"):  # photographs carry an EXIF orientation
                    im = ImageOps.exif_transpose(im)
                return _pil_to_array(im, path)
    except Image.DecompressionBombWarning as e:
        raise ImageReadError(f"{path}: image too large to decode safely, refused ({e})") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{path}: corrupt or unreadable {path.suffix.lower() or 'Pillow'} image ({e})") from e


def _pil_to_array(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    if mode.startswith("I;16"):
        return np.asarray(im, dtype=np.float32) / 65535.0
    if mode == "I":  # 32-bit integer container: use the bit depth the file declares
        bits = _declared_bits(im) or (16 if np.asarray(im).max(initial=0) <= 65535 else 0)
        a = np.asarray(im, dtype=np.float64)
        return (a / (2.0**bits - 1.0)).astype(np.float32) if bits else _minmax(a)
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        finite = a[np.isfinite(a)]
        in_unit = finite.size == a.size and finite.min(initial=0) >= 0 and finite.max(initial=0) <= 1
        return a if in_unit or finite.size < a.size else _minmax(a)
    if mode in ("L", "LA", "La"):
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0  # RGB(A), P, CMYK, YCbCr, LAB, ...


def _declared_bits(im: Image.Image) -> int | None:
    tags = getattr(im, "tag_v2", None)  # TIFF BitsPerSample
    if tags is not None and 258 in tags:
        bits = tags[258]
        return int(bits[0] if isinstance(bits, tuple) else bits)
    return None


# ------------------------------------------------------------------------------------------------ DICOM
def _lazy(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"reading this file needs {module}: pip install medlite[{extra}]") from e


def _read_dicom(path: Path, index: int | None, fp=None) -> np.ndarray:
    pydicom = _lazy("pydicom", "medical")
    pixels = _lazy("pydicom.pixels", "medical")  # pydicom >= 3
    try:
        ds = pydicom.dcmread(path if fp is None else fp)
    except Exception as e:  # InvalidDicomError, EOFError, struct errors, ...: all mean "not readable"
        raise ImageReadError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from e
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        modality = ds.get("Modality", "?")
        raise ImageReadError(f"{path}: DICOM file has no pixel data (modality {modality}; not an image)")
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    frame = n_frames // 2 if index is None else index
    if not 0 <= frame < n_frames:
        raise ImageReadError(f"{path}: frame {frame} out of range (the file has {n_frames} frame(s))")
    try:
        arr = pixels.pixel_array(ds, index=frame if n_frames > 1 else None)
    except Exception as e:  # truncated data, missing decoder plugin, bad header values
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_name = getattr(ts, "name", ts) or "unknown transfer syntax"
        raise ImageReadError(f"{path}: cannot decode DICOM pixel data ({ts_name}; {e})") from e
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = pixels.apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return rgb.astype(np.float32) / (2.0**bits - 1.0)
    if arr.ndim == 3:  # RGB / YBR (pydicom converts YBR to RGB)
        bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))
        return arr[..., :3].astype(np.float32) / (2.0**bits - 1.0)
    return _dicom_grey(pixels, ds, arr.astype(np.float64), frame, photometric)


def _dicom_grey(pixels, ds, x: np.ndarray, frame: int, photometric: str) -> np.ndarray:
    if "ModalityLUTSequence" in ds:  # a lookup table instead of slope / intercept: pydicom applies it
        x = pixels.apply_modality_lut(x.astype(np.int64), ds).astype(np.float64)
    else:  # slope / intercept, also from the functional groups of enhanced multi-frame files
        slope = _dicom_attr(ds, frame, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _dicom_attr(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept")
        x = x * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)
    if "VOILUTSequence" in ds:  # a VOI lookup table takes precedence over a window (pydicom's prefer_lut)
        x = x.astype(np.int64) if np.array_equal(x, np.round(x)) else x  # LUT indices are integers
        y = pixels.apply_voi_lut(x, ds, index=0, prefer_lut=True).astype(np.float64)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        y = np.clip(y / (2.0**bits - 1.0), 0.0, 1.0)
        return 1.0 - y if photometric == "MONOCHROME1" else y
    center = _dicom_attr(ds, frame, "FrameVOILUTSequence", "WindowCenter")
    width = _dicom_attr(ds, frame, "FrameVOILUTSequence", "WindowWidth")
    if center is not None and width is not None and width > 0:
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
        y = window(x, center, width, function)
    else:
        y = _minmax(x)
    return 1.0 - y if photometric == "MONOCHROME1" else y


def _dicom_attr(ds, frame: int, group: str, keyword: str) -> float | None:
    """First value of ``keyword`` at the top level, else in the shared or this frame's functional group."""
    value = ds.get(keyword)
    if value is None:
        groups = (("SharedFunctionalGroupsSequence", 0), ("PerFrameFunctionalGroupsSequence", frame))
        for seq_name, item in groups:
            seq = ds.get(seq_name)
            if seq is not None and len(seq) > item and group in seq[item]:
                value = seq[item][group][0].get(keyword)
                if value is not None:
                    break
    if value is None or value == "":
        return None
    if not isinstance(value, str | bytes) and hasattr(value, "__len__"):  # multi-valued: first value
        value = value[0] if len(value) else None
    return None if value is None else float(value)


def window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2) to [0, 1].

    Args:
        x: modality values (e.g. Hounsfield units), any shape.
        center, width: WindowCenter / WindowWidth.
        function: VOILUTFunction: "LINEAR" (default), "LINEAR_EXACT" or "SIGMOID".
    """
    x = np.asarray(x, dtype=np.float64)
    if function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        y = (x - center) / width + 0.5
    else:
        y = (x - (center - 0.5)) / max(width - 1.0, 1e-6) + 0.5
    return np.clip(y, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------ NIfTI
def _read_nifti(path: Path, index: int | None, raw: bytes | None = None) -> np.ndarray:
    nib = _lazy("nibabel", "medical")
    try:
        img = nib.load(path) if raw is None else _nifti_from_bytes(nib, raw)
        shape = img.shape
        if len(shape) < 2 or len(shape) > 4:
            raise ImageReadError(f"{path}: NIfTI image has {len(shape)} dimensions; expected 2, 3 or 4")
        if len(shape) == 4 and shape[3] > 1:  # reading volume 0 of a time series would be a silent choice
            raise ImageReadError(f"{path}: 4-D NIfTI with {shape[3]} volumes (shape {shape}); medlite reads one "
                                 "3-D volume: save the volume you mean as its own file (e.g. nibabel's "
                                 "image.slicer[..., t])")
        ornt = nib.orientations.io_orientation(img.affine)  # per voxel axis: (world axis, direction)
        if len(shape) == 2:
            plane = np.asanyarray(img.dataobj, dtype=np.float64)
            axes = [0, 1]
        else:
            axial = int(np.flatnonzero(ornt[:3, 0] == 2)[0]) if (ornt[:3, 0] == 2).any() else 2
            n = shape[axial]
            k = n // 2 if index is None else index
            if not 0 <= k < n:
                raise ImageReadError(f"{path}: slice {k} out of range (the volume has {n} axial slices)")
            sel: list = [slice(None)] * len(shape)
            # slice k counts from inferior to superior, as in nibabel's canonical (RAS+) volume, whatever the
            # stored order: a volume stored head-first reads its slice n-1-k
            sel[axial] = n - 1 - k if ornt[axial, 1] < 0 else k
            if len(shape) == 4:
                sel[3] = 0
            plane = np.asarray(img.dataobj[tuple(sel)], dtype=np.float64)  # reads this slice only
            axes = [a for a in range(3) if a != axial]
    except ImageReadError:
        raise
    except Exception as e:  # nibabel ImageFileError, gzip / zlib errors, EOF on truncated files
        raise ImageReadError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from e
    return _minmax(_radiological(plane, ornt, axes))


def _nifti_from_bytes(nib, raw: bytes):
    """An uncompressed single-file NIfTI-1 or NIfTI-2 image held in memory."""
    import struct

    size = struct.unpack("<i", raw[:4])[0] if len(raw) >= 4 else 0
    size = size if size in (348, 540) else struct.unpack(">i", raw[:4])[0] if len(raw) >= 4 else 0
    return (nib.Nifti2Image if size == 540 else nib.Nifti1Image).from_bytes(raw)


def _radiological(plane: np.ndarray, ornt: np.ndarray, axes: list[int]) -> np.ndarray:
    """(a, b) voxel plane -> rows from anterior to posterior, columns from patient right to left."""
    world = ornt[axes, 0]  # RAS world axis of each plane axis
    if np.isnan(world).any() or sorted(world.astype(int)) != [0, 1]:  # not an axial plane: keep as stored
        return plane
    if int(world[0]) == 0:
        xy, dx, dy = plane, ornt[axes[0], 1], ornt[axes[1], 1]
    else:
        xy, dx, dy = plane.T, ornt[axes[1], 1], ornt[axes[0], 1]
    # xy[i, j]: i along the voxel axis closest to world x, j to world y; make both increase to R and A
    if dx < 0:
        xy = xy[::-1]
    if dy < 0:
        xy = xy[:, ::-1]
    return xy[::-1, ::-1].T  # rows: y decreasing (A at top); columns: x decreasing (R on the left)


# ------------------------------------------------------------------------------------------ model input
def to_model_input(
    img: np.ndarray,
    size: int,
    channels: int,
    mean: float | Sequence[float] = 0.5,
    std: float | Sequence[float] = 0.5,
) -> np.ndarray:
    """Turn a :func:`read_image` array into one normalised model input (numpy + Pillow only).

    Grey -> colour repeats the channel; colour -> grey uses ITU-R 601-2 luma (as Pillow's ``convert("L")``
    in the training loaders). The resize is bilinear with antialiasing (Pillow), as ``resize_batch`` in
    training; the aspect ratio is not kept.

    Args:
        img: (H, W), (H, W, 1) or (H, W, 3) float in [0, 1], or uint8 in [0, 255].
        size: output side length in pixels.
        channels: 1 or 3.
        mean, std: one value for all channels or one per channel, applied as ``(x - mean) / std``.

    Returns:
        (1, channels, size, size) float32.
    """
    a = np.asarray(img)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"image dtype {a.dtype} is neither float in [0, 1] nor uint8")
    a = a.astype(np.float32, copy=False)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"image of shape {a.shape}; expected (H, W) or (H, W, 3)")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if channels == 1 and a.ndim == 3:
        a = a @ _LUMA
    if a.ndim == 2:
        planes = [a] * channels
    else:
        planes = [a[:, :, c] for c in range(3)]
    out = np.stack([_resize_plane(p, size) for p in planes])
    m = _per_channel(mean, channels, "mean")
    s = _per_channel(std, channels, "std")
    return ((out - m) / s)[None].astype(np.float32)


def _resize_plane(p: np.ndarray, size: int) -> np.ndarray:
    if p.shape == (size, size):
        return np.ascontiguousarray(p, dtype=np.float32)
    im = Image.fromarray(np.ascontiguousarray(p, dtype=np.float32))  # mode "F"
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def _per_channel(v: float | Sequence[float], channels: int, what: str) -> np.ndarray:
    a = np.atleast_1d(np.asarray(v, dtype=np.float32))
    if a.size not in (1, channels):
        raise ValueError(f"{what} has {a.size} values for {channels} channels")
    return np.broadcast_to(a, (channels,)).reshape(channels, 1, 1)
