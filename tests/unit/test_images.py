"""Image datasets: IDX, class folders in archives and NPZ read into (N, C, H, W); archives and
images that lie about themselves refused by name; normalisation checked by hand."""

from __future__ import annotations

import base64
import gzip
import io
import json
import stat
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from models.base import InputError
from models.data import DataError
from models.image_io import ImageLimits, images_from_npz, read_idx, read_image_folders
from models.image_preprocessing import ImagePreprocessor
from service import archives
from service.archives import ArchiveLimits, extract_archive
from service.ingest import describe, load_image_upload

RNG = np.random.default_rng(0)


# Builders -------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def png(array: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) or (H, W, C) array: L, I;16, RGB or RGBA by dtype and C."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but holds none: only its header is valid."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))


def write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:  # type: ignore[call-overload]
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return path


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    return str(info.value)


def refused_input(call: Any, *args: Any) -> str:
    with pytest.raises(InputError) as info:
        call(*args)
    return str(info.value)


@pytest.fixture
def mnist_like() -> tuple[np.ndarray, np.ndarray]:
    x = RNG.integers(0, 256, size=(6, 4, 3), dtype=np.uint8)  # (N, H, W)
    y = np.array([0, 1, 2, 0, 1, 9], dtype=np.uint8)
    return x, y


# IDX ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(
    tmp_path: Path, mnist_like: tuple[np.ndarray, np.ndarray], compress: bool
) -> None:
    x, y = mnist_like
    pack = gzip.compress if compress else bytes
    # Names say nothing: gzip is told by content.
    images_path = write(tmp_path / "a", pack(idx_bytes(x, 0x803)))
    labels_path = write(tmp_path / "b", pack(idx_bytes(y, 0x801)))
    got_x, got_y = read_idx(images_path, labels_path)
    assert got_x.shape == (6, 1, 4, 3) and got_x.dtype == np.uint8
    assert got_y.dtype == np.int64
    np.testing.assert_array_equal(got_x[:, 0], x)
    np.testing.assert_array_equal(got_y, y)
    assert got_x.flags.writeable  # torch.from_numpy warns on read-only arrays


def test_idx_truncated(tmp_path: Path, mnist_like: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = mnist_like
    images_path = write(tmp_path / "images", idx_bytes(x, 0x803)[:-52])  # 72 -> 20 bytes
    labels_path = write(tmp_path / "labels", idx_bytes(y, 0x801))
    message = refused(read_idx, images_path, labels_path)
    assert message == (
        "'images': truncated IDX file: header says 6 images of 3x4 but only 20 bytes of data "
        "(72 needed)"
    )
    labels_path.write_bytes(gzip.compress(idx_bytes(y, 0x801)[:-2]))
    images_path.write_bytes(idx_bytes(x, 0x803))
    assert "header says 6 labels but only 4 bytes" in refused(read_idx, images_path, labels_path)


def test_idx_counts_differ(tmp_path: Path) -> None:
    images_path = write(tmp_path / "i", idx_bytes(np.zeros((12, 2, 2)), 0x803))
    labels_path = write(tmp_path / "l", idx_bytes(np.zeros(10), 0x801))
    assert (
        refused(read_idx, images_path, labels_path) == "the IDX files hold 12 images but 10 labels"
    )


def test_idx_wrong_magic(tmp_path: Path, mnist_like: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = mnist_like
    images_path = write(tmp_path / "images", idx_bytes(x, 0x803))
    labels_path = write(tmp_path / "labels", idx_bytes(y, 0x801))
    assert refused(read_idx, labels_path, images_path) == (
        "'labels' is not an IDX image file: it is an IDX label file"
    )
    write(tmp_path / "png", png(x[0]))
    assert "'png' is not an IDX image file: it starts with 0x89504e47" in refused(
        read_idx, tmp_path / "png", labels_path
    )


def test_idx_header_beyond_limits_is_not_read(tmp_path: Path) -> None:
    header = struct.pack(">IIII", 0x803, 60000, 28, 28)  # promises 47 MB, holds none
    images_path = write(tmp_path / "images", header)
    labels_path = write(tmp_path / "labels", idx_bytes(np.zeros(3), 0x801))
    message = refused(read_idx, images_path, labels_path, limits=ImageLimits(max_total_bytes=1000))
    assert "header says 60000 images of 28x28, 47040000 bytes, more than the 1000 allowed" in (
        message
    )


def test_upload_of_two_idx_files_in_either_order(
    tmp_path: Path, mnist_like: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = mnist_like
    labels_path = write(tmp_path / "l.gz", gzip.compress(idx_bytes(y, 0x801)))
    images_path = write(tmp_path / "i", idx_bytes(x, 0x803))
    upload = [("train-labels.gz", labels_path), ("train-images", images_path)]
    data = load_image_upload(upload, tmp_path / "work")
    assert data.class_names is None and data.layout == "NHW"
    np.testing.assert_array_equal(data.x[:, 0], x)
    assert describe(data) == {
        "x": [6, 1, 4, 3],
        "y": [6],
        "channels": 1,
        "height": 4,
        "width": 3,
        "num_classes": 4,
        "class_counts": {"0": 2, "1": 2, "2": 1, "9": 1},
        "dtype": "uint8",
        "layout": "NHW",
    }


def test_upload_refuses_files_that_are_not_an_idx_pair(
    tmp_path: Path, mnist_like: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = mnist_like
    images_path = write(tmp_path / "i", idx_bytes(x, 0x803))
    other = write(tmp_path / "o", b"hello")
    message = refused(load_image_upload, [("a", images_path), ("b", other)], tmp_path)
    assert message.endswith("'a' is an IDX image file; 'b' is not an IDX file")
    message = refused(load_image_upload, [("a", images_path)], tmp_path)
    assert "'a' is a single IDX file" in message


def test_archive_holding_an_idx_pair(
    tmp_path: Path, mnist_like: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = mnist_like
    members = {
        "mnist/raw/train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(x, 0x803)),
        "mnist/raw/train-labels-idx1-ubyte": idx_bytes(y, 0x801),
        "mnist/README": b"not an IDX file",
    }
    archive = make_zip(tmp_path / "mnist.zip", members)
    data = load_image_upload([("mnist.zip", archive)], tmp_path / "work")
    np.testing.assert_array_equal(data.y, y)
    members["mnist/raw/t10k-labels-idx1-ubyte"] = idx_bytes(y, 0x801)
    archive = make_tar(tmp_path / "mnist.tgz", members)
    message = refused(load_image_upload, [("mnist.tgz", archive)], tmp_path / "work")
    assert "the archive holds 1 IDX image files and 2 IDX label files" in message


# Class folders --------------------------------------------------------------------------


def test_zip_of_gray_and_colour_class_folders(tmp_path: Path) -> None:
    gray = RNG.integers(0, 256, size=(2, 5, 4), dtype=np.uint8)  # (N, H, W)
    rgb = RNG.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)  # (H, W, C)
    rgba = RNG.integers(0, 256, size=(5, 4, 4), dtype=np.uint8)
    members = {
        "data/cat/a.png": png(gray[0]),
        "data/cat/b.png": png(gray[1]),
        "data/dog/c.png": png(rgb),
        "data/dog/d.png": png(rgba),
        "data/.DS_Store": b"\x00junk",  # ignored, like everything below
        "data/dog/._c.png": b"\x00junk",
        "__MACOSX/data/cat/._a.png": b"\x00junk",
    }
    archive = make_zip(tmp_path / "pets.zip", members)
    data = load_image_upload([("pets.zip", archive)], tmp_path / "work")
    # A mix of grayscale and colour: everything RGB, grayscale repeated over 3 channels.
    assert data.x.shape == (4, 3, 5, 4) and data.x.dtype == np.uint8
    assert data.class_names == ["cat", "dog"] and data.layout == "NHWC"
    np.testing.assert_array_equal(data.y, [0, 0, 1, 1])
    for channel in range(3):
        np.testing.assert_array_equal(data.x[0, channel], gray[0])
    np.testing.assert_array_equal(data.x[2], rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(data.x[3], rgba[..., :3].transpose(2, 0, 1))  # alpha dropped
    summary = describe(data)
    assert summary["class_counts"] == {"cat": 2, "dog": 2} and summary["channels"] == 3


def test_tar_of_grayscale_folders_keeps_one_channel(tmp_path: Path) -> None:
    gray = RNG.integers(0, 256, size=(3, 4), dtype=np.uint8)
    deep = np.array([[0, 257 * 100], [65535, 257 * 7]], dtype=np.uint16)  # 16-bit PNG
    jpeg = io.BytesIO()
    Image.fromarray(np.full((2, 2), 200, dtype=np.uint8)).save(jpeg, format="JPEG")
    members = {"0/a.png": png(np.kron(deep, np.ones((2, 2), np.uint16))[:3, :4])}
    members |= {"1/b.jpg": png(gray), "2/c.jpeg": png(gray)}
    archive = make_tar(tmp_path / "digits.tar.gz", members)
    data = load_image_upload([("digits.tar.gz", archive)], tmp_path / "work")
    assert data.x.shape == (3, 1, 3, 4) and data.layout == "NHW"
    # 16-bit values scaled to 8 bits (Pillow's own conversion would clip them at 255).
    np.testing.assert_array_equal(data.x[0, 0, ::2, ::2], [[0, 100], [255, 7]])
    root = write(tmp_path / "jpeg" / "a" / "x.jpg", jpeg.getvalue()).parent.parent
    write(root / "b" / "y.png", png(np.full((2, 2), 10, dtype=np.uint8)))
    x, _, names = read_image_folders(root)
    assert x.shape == (2, 1, 2, 2) and names == ["a", "b"] and abs(int(x[0, 0, 0, 0]) - 200) < 3


def test_mixed_sizes_name_both_files(tmp_path: Path) -> None:
    write(tmp_path / "cat" / "a.png", png(np.zeros((3, 4), dtype=np.uint8)))
    write(tmp_path / "dog" / "b.png", png(np.zeros((3, 5), dtype=np.uint8)))
    assert refused(read_image_folders, tmp_path) == (
        "images differ in size: 'cat/a.png' is 4x3 but 'dog/b.png' is 5x3; all images must "
        "have the same size (they are never resized)"
    )


def test_folder_problems_are_named(tmp_path: Path) -> None:
    assert "no class folders found" in refused(read_image_folders, tmp_path)
    write(tmp_path / "cat" / "a.png", png(np.zeros((3, 4), dtype=np.uint8)))
    write(tmp_path / "cat" / "notes.txt", b"a cat")
    assert refused(read_image_folders, tmp_path) == (
        "image 'cat/notes.txt' is not a PNG or JPEG image"
    )
    (tmp_path / "cat" / "notes.txt").unlink()
    (tmp_path / "dog").mkdir()
    assert refused(read_image_folders, tmp_path) == "class folder 'dog' holds no images"
    (tmp_path / "dog" / "puppies").mkdir()
    assert "class folder 'dog' holds a folder, 'puppies'" in refused(read_image_folders, tmp_path)
    (tmp_path / "dog" / "puppies").rmdir()
    write(tmp_path / "stray.png", png(np.zeros((3, 4), dtype=np.uint8)))
    assert "'stray.png' sits beside the class folders" in refused(read_image_folders, tmp_path)


# Archives -------------------------------------------------------------------------------


def test_member_escaping_the_folder(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"ok.txt": b"fine", "../evil.txt": b"evil"})
    dest = tmp_path / "out" / "x"
    message = refused(extract_archive, archive, dest, ArchiveLimits())
    assert message == "archive member '../evil.txt' escapes the extraction folder"
    assert not dest.exists() and not (tmp_path / "out" / "evil.txt").exists()
    archive = make_tar(tmp_path / "a.tar", {"/etc/evil": b"evil"}, mode="w")
    message = refused(extract_archive, archive, dest, ArchiveLimits())
    assert message == "archive member '/etc/evil' has an absolute path"


@pytest.mark.parametrize(
    ("kind", "word"), [(tarfile.SYMTYPE, "symbolic"), (tarfile.LNKTYPE, "hard")]
)
def test_tar_links_are_refused(tmp_path: Path, kind: bytes, word: str) -> None:
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as archive:
        link = tarfile.TarInfo("cat/passwd.png")
        link.type, link.linkname = kind, "/etc/passwd"
        archive.addfile(link)
    message = refused(extract_archive, path, tmp_path / "out", ArchiveLimits())
    assert message == f"archive member 'cat/passwd.png' is a {word} link"


def test_zip_symlinks_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("cat/passwd.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    message = refused(extract_archive, path, tmp_path / "out", ArchiveLimits())
    assert message == "archive member 'cat/passwd.png' is a symbolic link"


def test_too_many_files(tmp_path: Path) -> None:
    members = {f"c/{i}.png": b"x" for i in range(5)} | {"__MACOSX/c/._0.png": b"x"}
    limits = ArchiveLimits(max_files=3)
    zipped = make_zip(tmp_path / "a.zip", members)
    message = refused(extract_archive, zipped, tmp_path / "out", limits)
    assert message == "archive holds 5 files, more than the 3 allowed"
    tarred = make_tar(tmp_path / "a.tgz", members)
    message = refused(extract_archive, tarred, tmp_path / "out", limits)
    assert message == "archive holds more than the 3 files allowed"


def test_declared_size_beyond_the_cap_is_refused_before_extracting(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "big.zip", {"a.bin": bytes(1500), "b.bin": bytes(500)})
    dest = tmp_path / "out"
    message = refused(extract_archive, archive, dest, ArchiveLimits(max_total_bytes=1000))
    assert message == (
        "archive members add up to 2000 bytes uncompressed; at most 1000 bytes are allowed"
    )
    assert not dest.exists()


def test_bytes_written_are_counted_whatever_the_members_declare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CPython's zipfile and tarfile stop at the declared size themselves; switching off the
    # check of declared sizes stands for a reader that would not, and tests the second guard.
    monkeypatch.setattr(archives, "_check_declared", lambda *args, **kwargs: None)
    archive = make_zip(tmp_path / "bomb.zip", {"a.bin": bytes(600), "b.bin": bytes(600)})
    dest = tmp_path / "out"
    message = refused(extract_archive, archive, dest, ArchiveLimits(max_total_bytes=1000))
    assert message.startswith("archive expands to more than the 1000 bytes allowed")
    assert not dest.exists()


def test_zip_lying_about_its_size(tmp_path: Path) -> None:
    content = make_zip(tmp_path / "lie.zip", {"a.bin": bytes(5000)}).read_bytes()
    directory = content.index(b"PK\x01\x02")  # the central directory entry
    content = content[: directory + 24] + struct.pack("<I", 10) + content[directory + 28 :]
    archive = write(tmp_path / "lie.zip", content)
    message = refused(
        extract_archive, archive, tmp_path / "out", ArchiveLimits(max_total_bytes=100)
    )
    assert message.startswith("archive member 'a.bin' is corrupt: Bad CRC-32")


def test_image_bombs(tmp_path: Path) -> None:
    write(tmp_path / "a" / "x.png", png(np.zeros((10, 20), dtype=np.uint8)))
    message = refused(read_image_folders, tmp_path, limits=ImageLimits(max_image_pixels=100))
    assert message == "image 'a/x.png' has 20x10 pixels, more than the 100 allowed"
    # Headers only: neither image is ever decoded.
    write(tmp_path / "a" / "x.png", png_header(60_000, 1_000))
    message = refused(read_image_folders, tmp_path)
    assert message == "image 'a/x.png' has 60000x1000 pixels, more than the 50000000 allowed"
    write(tmp_path / "a" / "x.png", png_header(100_000, 100_000))  # past Pillow's own guard
    message = refused(read_image_folders, tmp_path)
    assert message == "image 'a/x.png' has 10000000000 pixels, more than the 50000000 allowed"


# NPZ ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "to_nchw"),
    [
        ((2, 5, 4), lambda x: x[:, None]),
        ((2, 5, 4, 1), lambda x: x.transpose(0, 3, 1, 2)),
        ((2, 5, 4, 3), lambda x: x.transpose(0, 3, 1, 2)),
        ((2, 1, 5, 4), lambda x: x),
        ((2, 3, 5, 4), lambda x: x),
        ((2, 3, 5, 3), lambda x: x),  # ambiguous: NCHW
    ],
)
def test_npz_layouts(shape: tuple[int, ...], to_nchw: Any) -> None:
    x = RNG.random(shape).astype(np.float32)
    got = images_from_npz(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, to_nchw(x))


@pytest.mark.parametrize("shape", [(2, 5), (2, 2, 5, 5), (2, 1, 2, 3, 4)])
def test_npz_shapes_that_are_not_images(shape: tuple[int, ...]) -> None:
    assert "images must be (N, H, W), (N, H, W, C) or (N, C, H, W)" in refused(
        images_from_npz, np.zeros(shape)
    )


def test_npz_upload(tmp_path: Path) -> None:
    x = RNG.integers(0, 256, size=(3, 5, 4, 3))  # int64 pixels, NHWC
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.array(["dog", "cat", "dog"]))
    data = load_image_upload([("d.npz", path)], tmp_path)
    assert data.x.dtype == np.uint8 and data.x.shape == (3, 3, 5, 4) and data.layout == "NHWC"
    assert data.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(data.y, [1, 0, 1])
    np.savez(path, x=x / 255, y=np.array([3, 1, 3]))
    data = load_image_upload([("d.npz", path)], tmp_path)
    assert data.x.dtype == np.float32 and data.class_names is None
    assert describe(data)["class_counts"] == {"1": 1, "3": 2}
    x[0, 0, 0, 0] = -1
    np.savez(path, x=x, y=np.array([3, 1, 3]))
    message = refused(load_image_upload, [("d.npz", path)], tmp_path)
    assert message.startswith("x holds integers from -1 to ")


# Normalisation --------------------------------------------------------------------------


def test_normalisation_by_hand() -> None:
    constant = np.full((3, 1, 2, 2), 51, dtype=np.uint8)  # 51 / 255 = 0.2
    pre = ImagePreprocessor.fit(constant)
    assert pre.mean.tolist() == pytest.approx([0.2]) and pre.std.tolist() == [1.0]
    np.testing.assert_allclose(pre.transform(constant), 0.0, atol=1e-7)
    # Channel 0 constant (white); channel 1 half black, half white: mean 0.5, std 0.5.
    x = np.zeros((2, 2, 1, 2), dtype=np.uint8)
    x[:, 0] = 255
    x[:, 1, 0, 1] = 255
    pre = ImagePreprocessor.fit(x)
    np.testing.assert_allclose(pre.mean, [1.0, 0.5])
    np.testing.assert_allclose(pre.std, [1.0, 0.5])
    np.testing.assert_allclose(pre.transform(x)[0], [[[0.0, 0.0]], [[-1.0, 1.0]]], atol=1e-6)
    given = ImagePreprocessor.fit(x, mean=[0.5, 0.5], std=[0.25, 0.25])
    np.testing.assert_allclose(given.transform(x)[0, 1], [[-2.0, 2.0]], atol=1e-6)
    floats = ImagePreprocessor.fit(x.astype(np.float32))  # no 1/255 scaling for floats
    np.testing.assert_allclose(floats.mean, [255.0, 127.5])
    assert "normalize.mean has 1 values but the images have 2 channels" in refused(
        ImagePreprocessor.fit, x, mean=[0.5], std=[0.5]
    )


def gray_model() -> tuple[ImagePreprocessor, np.ndarray]:
    x = RNG.integers(0, 256, size=(4, 1, 4, 4), dtype=np.uint8)
    return ImagePreprocessor.fit(x, layout="NHW"), x


def test_json_round_trip() -> None:
    pre, x = gray_model()
    stored = json.loads(json.dumps({"type": "image", **pre.to_json()}, allow_nan=False))
    again = ImagePreprocessor.from_json(stored)
    assert again.to_json() == pre.to_json()
    assert again.input_schema() == pre.input_schema()
    assert pre.input_schema()["shape"] == [4, 4] and pre.input_schema()["dtype"] == "uint8"
    np.testing.assert_array_equal(again.transform(x), pre.transform(x))


def test_base64_png_decodes_like_the_nested_array() -> None:
    pre, x = gray_model()
    image = x[0, 0]  # (H, W)
    encoded = base64.b64encode(png(image)).decode()
    decoded = pre.decode_inputs([image.tolist(), encoded, f"data:image/png;base64,{encoded}"])
    assert decoded.shape == (3, 1, 4, 4) and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded[0], pre.transform(x[:1])[0])
    np.testing.assert_array_equal(decoded[1], decoded[0])
    np.testing.assert_array_equal(decoded[2], decoded[0])
    np.testing.assert_array_equal(pre.decode_files([png(image)]), decoded[:1])
    # A colour image sent to a grayscale model is converted to L.
    colour = np.repeat(image[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(pre.decode_files([png(colour)]), decoded[:1])


def test_colour_model_takes_hwc_arrays_and_images() -> None:
    x = RNG.integers(0, 256, size=(3, 3, 5, 4), dtype=np.uint8)
    pre = ImagePreprocessor.fit(x, layout="NHWC")
    hwc = x[1].transpose(1, 2, 0)  # (H, W, C), as the upload's images were
    decoded = pre.decode_inputs([hwc.tolist(), base64.b64encode(png(hwc)).decode()])
    np.testing.assert_array_equal(decoded[0], pre.transform(x[1:2])[0])
    np.testing.assert_array_equal(decoded[1], decoded[0])


def test_one_array_of_images_decodes_like_the_nested_arrays() -> None:
    """The inference protocol's tensors arrive as one array: checked and decoded at once."""
    pre, x = gray_model()
    images = x[:, 0]  # (N, H, W) uint8, the layout the model was trained on
    np.testing.assert_array_equal(
        pre.decode_inputs(images), pre.decode_inputs([i.tolist() for i in images])
    )
    colour = RNG.integers(0, 256, size=(3, 3, 5, 4), dtype=np.uint8)
    hwc_model = ImagePreprocessor.fit(colour, layout="NHWC")
    hwc = colour.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(hwc_model.decode_inputs(hwc), hwc_model.transform(colour))
    assert "the model takes arrays of shape [N, 4, 4]" in refused_input(
        pre.decode_inputs, np.zeros((2, 4, 5))
    )
    assert refused_input(pre.decode_inputs, np.full((1, 4, 4), np.inf)) == (
        "inputs hold NaN or infinite values"
    )
    assert "outside 0..255" in refused_input(pre.decode_inputs, np.full((1, 4, 4), 256.0))
    assert pre.decode_inputs(np.zeros((0, 4, 4))).shape == (0, 1, 4, 4)


def test_float_model_in_unit_range_reads_images_as_fractions() -> None:
    x = RNG.integers(0, 256, size=(2, 1, 4, 4)).astype(np.float32) / 255
    pre = ImagePreprocessor.fit(x, layout="NHW")
    pixels = (x[0, 0] * 255).round().astype(np.uint8)
    np.testing.assert_allclose(pre.decode_files([png(pixels)]), pre.transform(x[:1]), atol=1e-5)
    wide = ImagePreprocessor.fit(x * 10, layout="NHW")
    assert "was not trained on 8-bit images" in refused_input(wide.decode_files, [png(pixels)])


def test_predict_inputs_refused_by_index() -> None:
    pre, x = gray_model()
    good = x[0, 0].tolist()
    big = base64.b64encode(png(np.zeros((5, 6), dtype=np.uint8))).decode()
    assert refused_input(pre.decode_inputs, [good, good, big]) == (
        "image 2 is 6x5; the model takes 4x4 images"
    )
    assert refused_input(pre.decode_files, [png_header(100_000, 100_000)]).startswith(
        "image 0 has 10000000000 pixels"
    )
    assert "input 1 is not valid base64" in refused_input(pre.decode_inputs, [good, "no way!"])
    not_png = base64.b64encode(b"GIF89a...").decode()
    assert refused_input(pre.decode_inputs, [not_png]) == "image 0 is not a PNG or JPEG image"
    nan = [[float("nan")] * 4] * 4
    assert refused_input(pre.decode_inputs, [good, nan]) == "input 1 holds NaN or infinite values"
    assert refused_input(pre.decode_inputs, [[[0] * 3] * 3]).startswith(
        "input 0 has shape [3, 3]; the model takes arrays of shape [4, 4]"
    )
    assert "input 0 is not a rectangular array" in refused_input(pre.decode_inputs, [[[0], [0, 1]]])
    assert "input 0 must be a nested array" in refused_input(pre.decode_inputs, [{"a": 1}])
    assert "outside 0..255" in refused_input(pre.decode_inputs, [[[256] * 4] * 4])
