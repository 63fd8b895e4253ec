"""Dataset sources: IDX parsing, shape and label checks, missing data errors."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from pipeline.data.sources import Source, check_source, load_digits, load_fashion_mnist, load_imagefolder
from pipeline.errors import DataError


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion(root, n=20):
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(n) % 10)
    write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (10, 28, 28)))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(10))


def test_load_fashion_mnist__reads_idx_from_root(tmp_path):
    fake_fashion(tmp_path)
    src = load_fashion_mnist(str(tmp_path))
    assert src.x_train.shape == (20, 28, 28, 1) and src.y_test.tolist() == list(range(10))


def test_load_fashion_mnist__truncated_file(tmp_path):
    fake_fashion(tmp_path)
    data = gzip.open(tmp_path / "train-images-idx3-ubyte.gz").read()
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(data[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_fashion_mnist(str(tmp_path))


def test_load_fashion_mnist__root_without_files(tmp_path):
    with pytest.raises(DataError, match=f"data.root={tmp_path}: no Fashion-MNIST IDX files"):
        load_fashion_mnist(str(tmp_path))


def test_load_digits__shape_and_range():
    src = load_digits(None)
    assert src.x_train.shape[1:] == (8, 8, 1) and src.x_train.dtype == np.uint8
    assert src.x_train.max() == 255 and len(src.y_train) + len(src.y_test) == 1797


def test_check_source__wrong_shape_and_labels():
    x, y = np.zeros((4, 8, 8, 1), np.uint8), np.array([0, 1, 2, 3])
    with pytest.raises(DataError, match=r"expected \[N, H, W, 1\|3\] uint8"):
        check_source(Source(x[..., 0], y, x, y, ("a", "b", "c", "d"), "t"))
    with pytest.raises(DataError, match=r"labels span 0..3, expected 0..1"):
        check_source(Source(x, y, x, y, ("a", "b"), "t"))


def test_load_imagefolder__empty_class(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            if not (split == "train" and cls == "dog"):
                Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / split / cls / "a.png")
    with pytest.raises(DataError, match="train/dog holds no images"):
        load_imagefolder(str(tmp_path), 16)
    Image.new("RGB", (30, 40)).save(tmp_path / "train" / "dog" / "b.jpg")
    src = load_imagefolder(str(tmp_path), 16)
    assert src.x_train.shape == (2, 16, 16, 3) and src.classes == ("cat", "dog")


def test_load_imagefolder__decodes_only_the_rows_asked_for(tmp_path, monkeypatch):
    from PIL import Image

    from pipeline.data.sources import FolderImages

    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 30), (60 * i, 20, 30)).save(tmp_path / split / cls / f"{i}.png")
    (tmp_path / "train" / "dog" / "2.png").write_bytes(b"not an image")  # never read unless asked for
    src = load_imagefolder(str(tmp_path), 16)
    decoded = []
    real = FolderImages.decode
    monkeypatch.setattr(FolderImages, "decode", lambda self, p: decoded.append(p.name) or real(self, p))
    rows = src.x_train[np.array([0, 4])]
    assert rows.shape == (2, 16, 16, 3) and rows.dtype == np.uint8 and decoded == ["0.png", "1.png"]
    assert rows[0, 8, 8, 0] == 0 and src.x_train[np.array([1])][0, 8, 8, 0] == 60
    assert src.y_train.tolist() == [0, 0, 0, 1, 1, 1] and src.x_test[:].shape == (6, 16, 16, 3)


def test_load_imagefolder__resize_then_centre_crop_as_the_evaluation_of_mae(tmp_path):
    """resize 32 then crop 28 (256 then 224 at ImageNet scale): the crop keeps the centre 28 of the resized side,
    so a left stripe that the plain resize to 28 keeps is cut off."""
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / split / "cls").mkdir(parents=True)
        im = Image.new("RGB", (64, 64), (200, 200, 200))
        im.paste((0, 0, 0), (0, 0, 4, 64))  # a 4 px black stripe on the left: 2 px at side 32
        im.save(tmp_path / split / "cls" / "a.png")
    plain = load_imagefolder(str(tmp_path), 28).x_train[:]
    cropped = load_imagefolder(str(tmp_path), 28, resize=32).x_train[:]
    by_hand = np.asarray(Image.open(tmp_path / "train" / "cls" / "a.png").convert("RGB")
                         .resize((32, 32), Image.BICUBIC).crop((2, 2, 30, 30)))
    np.testing.assert_array_equal(cropped[0], by_hand)
    assert plain[0, 14, 0, 0] < 50 and cropped[0, 14, 0, 0] > 150  # the stripe survives the plain resize only
