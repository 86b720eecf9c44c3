"""read_image: every format to (H, W) / (H, W, 3) float32 in [0, 1]; clear errors; to_model_input."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlite.data.io import ImageReadError, read_image, to_model_input, window

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
from pydicom.data import get_testdata_file  # noqa: E402 (after the importorskip)

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _local(name: str) -> str:
    """A DICOM test file shipped inside the pydicom wheel (get_testdata_file would download the others)."""
    if not (TEST_FILES / name).is_file():
        pytest.fail(f"pydicom no longer ships {name}")
    return get_testdata_file(name)


def _check(a: np.ndarray, shape: tuple[int, ...]) -> None:
    assert a.dtype == np.float32 and a.shape == shape and a.flags.c_contiguous
    assert 0.0 <= a.min() and a.max() <= 1.0


def _minmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.min()) / (x.max() - x.min())


# ------------------------------------------------------------------------------------------- Pillow
def test_png_8bit_grey_is_value_over_255(tmp_path):
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(a).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    _check(out, (16, 16))
    np.testing.assert_array_equal(out, a / np.float32(255))


def test_png_16bit_scaled_by_bit_depth_not_minmax(tmp_path):
    a = np.full((8, 8), 1000, dtype=np.uint16)
    a[0, 0] = 3000  # min-max would map 1000 -> 0
    Image.fromarray(a).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    _check(out, (8, 8))
    np.testing.assert_allclose(out, a / 65535.0, rtol=0, atol=1e-7)


def test_png_rgba_and_palette_become_rgb(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    _check(out, (4, 5, 3))
    assert out[..., 0].min() == 1.0 and out[..., 1:].max() == 0.0  # alpha dropped, not blended
    Image.fromarray(rgba[..., :3], "RGB").convert("P").save(tmp_path / "p.png")
    _check(read_image(tmp_path / "p.png"), (4, 5, 3))


def test_jpeg_grey_and_colour(tmp_path):
    grey = np.full((20, 30), 128, np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.jpg", quality=95)
    out = read_image(tmp_path / "g.jpg")
    _check(out, (20, 30))
    assert abs(out.mean() - 128 / 255) < 2 / 255
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 2] = 200
    Image.fromarray(rgb).save(tmp_path / "c.jpeg", quality=95)
    out = read_image(tmp_path / "c.jpeg")
    _check(out, (20, 30, 3))
    assert abs(out[..., 2].mean() - 200 / 255) < 3 / 255 and out[..., 0].mean() < 3 / 255


def test_jpeg_exif_orientation_is_applied(tmp_path):
    a = np.zeros((10, 20), np.uint8)  # wide image stored; EXIF says rotate 90 degrees -> tall
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "phone.jpg", exif=exif)
    assert read_image(tmp_path / "phone.jpg").shape == (20, 10)


def test_bmp_is_exact(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.bmp")
    out = read_image(tmp_path / "x.bmp")
    _check(out, (7, 9, 3))
    np.testing.assert_array_equal(out, rgb / np.float32(255))


def test_tiff_16bit_and_float(tmp_path):
    a = np.array([[0, 65535], [32768, 100]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "x.tif")
    np.testing.assert_allclose(read_image(tmp_path / "x.tif"), a / 65535.0, atol=1e-7)
    f = np.array([[0.25, 0.5], [0.75, 1.0]], np.float32)
    Image.fromarray(f).save(tmp_path / "unit.tiff")
    np.testing.assert_array_equal(read_image(tmp_path / "unit.tiff"), f)  # already in [0, 1]: kept
    Image.fromarray(f * 1000 - 100).save(tmp_path / "hu.tiff")
    np.testing.assert_allclose(read_image(tmp_path / "hu.tiff"), _minmax(f), atol=1e-6)


# -------------------------------------------------------------------------------------------- DICOM
def test_dicom_ct_rescale_then_minmax():
    path = _local("CT_small.dcm")
    ds = pydicom.dcmread(path)
    assert "WindowCenter" not in ds  # this file has no window: min-max of the Hounsfield units
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    out = read_image(path)
    _check(out, (128, 128))
    np.testing.assert_allclose(out, _minmax(hu), atol=1e-6)


def test_dicom_mr_window_matches_pydicom():
    path = _local("MR_small.dcm")
    ds = pydicom.dcmread(path)
    out = read_image(path)
    _check(out, (64, 64))
    from pydicom.pixels import apply_windowing

    ref = apply_windowing(ds.pixel_array.astype(np.float64), ds)  # scaled to the stored value range
    bits = int(ds.BitsStored)
    lo, hi = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if ds.PixelRepresentation else (0.0, 2.0**bits - 1)
    np.testing.assert_allclose(out, (ref - lo) / (hi - lo), atol=1e-5)
    np.testing.assert_allclose(out, window(ds.pixel_array, 600.0, 1600.0), atol=1e-6)


def test_window_function_by_hand():
    # LINEAR, c = 40, w = 400 (PS3.3 C.11.2.1.2.1): 0 at <= c - 0.5 - (w - 1) / 2 = -160,
    # 1 above c - 0.5 + (w - 1) / 2 = 239, 0.5 at c - 0.5 = 39.5
    y = window(np.array([-1000.0, -160.0, 39.5, 239.0, 3000.0]), 40.0, 400.0)
    np.testing.assert_allclose(y, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(window(np.array([40.0]), 40.0, 400.0, "LINEAR_EXACT"), [0.5])
    np.testing.assert_allclose(window(np.array([40.0]), 40.0, 400.0, "SIGMOID"), [0.5])


def test_dicom_monochrome1_is_inverted(tmp_path):
    src = _local("MR_small.dcm")
    ds = pydicom.dcmread(src)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "mono1.dcm")
    np.testing.assert_allclose(read_image(tmp_path / "mono1.dcm"), 1.0 - read_image(src), atol=1e-6)


def test_dicom_multiframe_middle_frame_by_default():
    path = _local("rtdose.dcm")
    frames = pydicom.dcmread(path).pixel_array
    assert frames.shape[0] == 15
    out = read_image(path)
    _check(out, frames.shape[1:])
    np.testing.assert_allclose(out, _minmax(frames[7]), atol=1e-6)
    np.testing.assert_allclose(read_image(f"{path}::0"), _minmax(frames[0]), atol=1e-6)
    np.testing.assert_allclose(read_image(path, index=14), _minmax(frames[14]), atol=1e-6)
    with pytest.raises(ImageReadError, match="frame 15 out of range"):
        read_image(path, index=15)


def test_dicom_rgb_and_palette():
    path = _local("examples_rgb_color.dcm")
    out = read_image(path)
    _check(out, (240, 320, 3))
    np.testing.assert_array_equal(out, pydicom.dcmread(path).pixel_array / np.float32(255))
    _check(read_image(_local("examples_palette.dcm")), (350, 800, 3))
    _check(read_image(_local("SC_ybr_full_422_uncompressed.dcm")), (100, 100, 3))


def test_dicom_without_extension_is_sniffed(tmp_path):
    shutil.copy(_local("CT_small.dcm"), tmp_path / "IM0001")
    np.testing.assert_array_equal(read_image(tmp_path / "IM0001"), read_image(_local("CT_small.dcm")))


# -------------------------------------------------------------------------------------------- NIfTI
def _volume() -> np.ndarray:
    """(x, y, z) = (6, 5, 4) in RAS voxel order; voxel value encodes where it is."""
    x, y, z = np.meshgrid(np.arange(6), np.arange(5), np.arange(4), indexing="ij")
    return (100 * z + 10 * y + x).astype(np.float32)


def test_nifti_axial_slice_radiological(tmp_path):
    vol = _volume()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    out = read_image(tmp_path / "v.nii.gz")  # middle slice: z = 2
    _check(out, (5, 6))  # rows = y (5), columns = x (6)
    def axial(z: int) -> np.ndarray:  # anterior (high y) at the top, patient right (high x) on the left
        return _minmax(vol[:, :, z][::-1, ::-1].T)

    np.testing.assert_allclose(out, axial(2), atol=1e-6)
    np.testing.assert_allclose(read_image(f"{tmp_path / 'v.nii.gz'}::0"), axial(0), atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "v.nii.gz", index=3), axial(3), atol=1e-6)
    with pytest.raises(ImageReadError, match="slice 4 out of range"):
        read_image(tmp_path / "v.nii.gz", index=4)


def test_nifti_orientation_independent_of_storage(tmp_path):
    """The same anatomy stored LPS (x and y flipped) and with x / z axes swapped reads the same."""
    vol = _volume()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "ras.nii")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(vol[::-1, ::-1].copy(), lps), tmp_path / "lps.nii")
    swap = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)  # voxel (z, y, x)
    nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0).copy(), swap), tmp_path / "zyx.nii")
    ref = read_image(tmp_path / "ras.nii")
    np.testing.assert_allclose(read_image(tmp_path / "lps.nii"), ref, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "zyx.nii"), ref, atol=1e-6)


def test_nifti_4d_with_several_volumes_is_refused_and_one_volume_is_read(tmp_path):
    """Issue 15, item 5: picking volume 0 of a time series silently is a wrong answer waiting to happen."""
    vol = np.stack([_volume(), -_volume()], axis=-1)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "t.nii.gz")
    _raises_naming(tmp_path / "t.nii.gz", "4-D NIfTI with 2 volumes")
    nib.save(nib.Nifti1Image(_volume()[..., None], np.eye(4)), tmp_path / "one.nii.gz")
    nib.save(nib.Nifti1Image(_volume(), np.eye(4)), tmp_path / "first.nii.gz")
    np.testing.assert_allclose(read_image(tmp_path / "one.nii.gz"), read_image(tmp_path / "first.nii.gz"),
                               atol=1e-6)


# ------------------------------------------------------------------------------------------- errors
def _raises_naming(path, match: str) -> None:
    with pytest.raises(ImageReadError, match=match) as err:
        read_image(path)
    assert Path(str(path).split("::")[0]).name in str(err.value)


def test_truncated_png(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    _raises_naming(tmp_path / "t.png", "corrupt")


def test_png_declaring_a_huge_size_is_refused(tmp_path):
    """Issue 15, item 4: a PNG that declares 12000 x 12000 but holds 4 rows was decoded with black fill."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes(12000) for _ in range(4))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    (tmp_path / "big.png").write_bytes(png)
    _raises_naming(tmp_path / "big.png", "too large to decode safely|corrupt")


def test_garbage_dicom(tmp_path):
    (tmp_path / "junk.dcm").write_bytes(b"this is not a dicom file" * 20)
    _raises_naming(tmp_path / "junk.dcm", "not a readable DICOM")


def test_truncated_dicom_pixels_and_no_pixels():
    _raises_naming(_local("MR_truncated.dcm"), "cannot decode DICOM pixel data")
    _raises_naming(_local("rtplan.dcm"), "no pixel data")


def test_unknown_extension_empty_missing(tmp_path):
    (tmp_path / "notes.xyz").write_text("hello")
    _raises_naming(tmp_path / "notes.xyz", "unsupported extension '.xyz'")
    (tmp_path / "empty.png").write_bytes(b"")
    _raises_naming(tmp_path / "empty.png", "empty file")
    _raises_naming(tmp_path / "missing.png", "not found")
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b garbage")
    _raises_naming(tmp_path / "bad.nii.gz", "not a readable NIfTI")
    assert issubclass(ImageReadError, ValueError)


def test_nan_is_an_error(tmp_path):
    f = np.array([[0.1, np.nan], [0.2, 0.3]], np.float32)
    Image.fromarray(f).save(tmp_path / "nan.tif")
    _raises_naming(tmp_path / "nan.tif", "NaN")
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), np.nan, np.float32), np.eye(4)), tmp_path / "nan.nii")
    _raises_naming(tmp_path / "nan.nii", "NaN")


# ------------------------------------------------------------------------------------ to_model_input
def test_to_model_input_normalises_and_converts_channels():
    grey = np.full((10, 12), 0.75, np.float32)
    x = to_model_input(grey, 8, 3, [0.5, 0.5, 0.25], [0.5, 0.25, 0.25])
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [0.5, 1.0, 2.0], atol=1e-6)
    rgb = np.zeros((4, 4, 3), np.float32)
    rgb[..., 1] = 1.0
    np.testing.assert_allclose(to_model_input(rgb, 4, 1, 0.0, 1.0), 0.587, atol=1e-6)  # ITU-R 601 luma
    u8 = np.full((4, 4), 255, np.uint8)
    np.testing.assert_allclose(to_model_input(u8, 4, 1, 0.5, 0.5), 1.0)
    with pytest.raises(ValueError, match="mean has 2 values"):
        to_model_input(grey, 8, 3, [0.5, 0.5], 0.5)


def test_to_model_input_resize_matches_training_resize():
    torch = pytest.importorskip("torch")
    from medlite.data.transforms import resize_batch

    img = np.random.default_rng(0).random((97, 131)).astype(np.float32)
    ref = resize_batch(torch.from_numpy(img)[None, None], 28).numpy()
    np.testing.assert_allclose(to_model_input(img, 28, 1, 0.0, 1.0), ref, atol=1e-5)


def test_io_module_imports_no_torch():
    tree = ast.parse(Path(__file__).parents[2].joinpath("medlite", "data", "io.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(n.split(".")[0] == "torch" for n in names), names


def _with_lut(tmp_path, name: str, kind: str):
    """MR_small.dcm with a Modality LUT or a VOI LUT sequence added (pydicom applies both)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(_local("MR_small.dcm"))
    item = Dataset()
    n = int(ds.pixel_array.max()) + 1
    if kind == "voi":  # an inverting 8-bit LUT over the stored range
        item.add_new(0x00283002, "US", [n, 0, 8])  # LUTDescriptor
        item.add_new(0x00283006, "US", [int(255 - 255 * v / (n - 1)) for v in range(n)])  # LUTData
        ds.VOILUTSequence = Sequence([item])
    else:  # a modality LUT squaring the stored value (in 16 bits)
        item.add_new(0x00283002, "US", [n, 0, 16])
        item.ModalityLUTType = "US"
        item.add_new(0x00283006, "US", [min(65535, v * v // 16) for v in range(n)])
        ds.ModalityLUTSequence = Sequence([item])
        for k in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
            if k in ds:
                delattr(ds, k)
    ds.save_as(tmp_path / name)
    return tmp_path / name, ds


def test_dicom_voi_lut_sequence_is_applied(tmp_path):
    """Ecosystem issue: VOI LUT sequences were ignored; pydicom's apply_voi_lut applies them now."""
    path, ds = _with_lut(tmp_path, "voi.dcm", "voi")
    from pydicom.pixels import apply_voi_lut

    ref = apply_voi_lut(ds.pixel_array, ds, prefer_lut=True) / 255.0
    out = read_image(path)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    plain = read_image(_local("MR_small.dcm"))  # the window it has too: the LUT wins, as pydicom prefers
    assert np.abs(out - plain).mean() > 0.2


def test_dicom_modality_lut_sequence_is_applied(tmp_path):
    path, ds = _with_lut(tmp_path, "mlut.dcm", "modality")
    from pydicom.pixels import apply_modality_lut

    np.testing.assert_allclose(read_image(path), _minmax(apply_modality_lut(ds.pixel_array, ds)), atol=1e-6)


@pytest.mark.parametrize("perm", [(0, 1, 2), (2, 1, 0), (1, 0, 2), (0, 2, 1)])
@pytest.mark.parametrize("flips", [(1, 1, 1), (-1, -1, 1), (1, -1, -1), (-1, 1, -1)])
def test_nifti_slice_equals_nibabels_canonical_reorientation(tmp_path, perm, flips):
    """Ecosystem issue: orientation through nibabel. The slice read (one slice from disk) equals the axial
    slice of nibabel's as_closest_canonical (RAS+) volume shown radiologically (anterior up, patient right
    on the left), for any axis order and flips of the stored voxels."""
    rng = np.random.default_rng(0)
    ras = rng.random((6, 7, 5)).astype(np.float32)  # x (R), y (A), z (S)
    stored = ras.transpose(perm)
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for voxel_axis, world_axis in enumerate(perm):
        affine[world_axis, voxel_axis] = flips[voxel_axis]
        if flips[voxel_axis] < 0:
            stored = np.flip(stored, voxel_axis)
            affine[world_axis, 3] = ras.shape[world_axis] - 1
    img = nib.Nifti1Image(np.ascontiguousarray(stored), affine)
    nib.save(img, tmp_path / "v.nii")
    canon = np.asanyarray(nib.as_closest_canonical(nib.load(tmp_path / "v.nii")).dataobj)
    np.testing.assert_allclose(canon, ras)  # the test's own construction is right
    for k in (0, 2, 4):
        np.testing.assert_allclose(read_image(f"{tmp_path / 'v.nii'}::{k}"), _minmax(canon[::-1, ::-1, k].T),
                                   atol=1e-6)


def test_bytes_read_like_files_whatever_the_name(tmp_path):
    """Serve issue: an upload is read from memory by its content, equal to reading the file."""
    from PIL import Image

    from medlite.data.io import read_image_bytes

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8)).save(tmp_path / "b.jpg")
    Image.fromarray(rng.integers(0, 255, (9, 7), dtype=np.uint8)).save(tmp_path / "c.tif")
    nib.save(nib.Nifti1Image(_volume(), np.eye(4)), tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image(_volume(), np.eye(4)), tmp_path / "v.nii")
    nib.save(nib.Nifti2Image(_volume(), np.eye(4)), tmp_path / "v2.nii")
    files = [tmp_path / f for f in ("a.png", "b.jpg", "c.tif", "v.nii.gz", "v.nii", "v2.nii")]
    files += [Path(_local("CT_small.dcm")), Path(_local("MR_small.dcm"))]
    for f in files:
        got = read_image_bytes(f.read_bytes(), "upload.bin")  # the name says nothing about the type
        np.testing.assert_array_equal(got, read_image(f), err_msg=str(f))
    np.testing.assert_array_equal(read_image_bytes((tmp_path / "v.nii.gz").read_bytes(), "x", index=1),
                                  read_image(tmp_path / "v.nii.gz", index=1))


@pytest.mark.parametrize(("data", "fragment"), [
    (b"", "empty file"),
    (b"GIF89a" + bytes(40), "not an image medlite reads"),
    (b"<html><script>", "not an image medlite reads"),
    (b"\x89PNG\r\n\x1a\n" + bytes(30), "corrupt or unreadable"),
    (b"\x1f\x8b" + bytes(30), "corrupt gzip"),
])
def test_bad_bytes_are_named_errors(data, fragment):
    from medlite.data.io import read_image_bytes

    with pytest.raises(ImageReadError) as e:
        read_image_bytes(data, "../../etc/scan.png")
    assert fragment in str(e.value) and str(e.value).startswith("scan.png:")  # the bare name, never a path


def test_a_gzip_bomb_is_refused():
    import gzip

    from medlite.data.io import read_image_bytes

    with pytest.raises(ImageReadError, match="decompresses to more than 1 MB"):
        read_image_bytes(gzip.compress(bytes(3 * 2**20)), "v.nii.gz", max_bytes=2**20)
