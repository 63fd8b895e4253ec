"""Dataset sources, each returning uint8 images [N, H, W, C] and int64 labels for train and test.

A registry dict maps params `data.dataset` to a loader; every loader checks what it read.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.data.facts import FACTS, DatasetFacts  # noqa: F401  re-exported: the facts of SOURCES' datasets
from pipeline.errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                         "boot")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Source:
    """A dataset as loaded: images [N, H, W, C] uint8, labels [N] int64, class names."""

    x_train: np.ndarray  # or a FolderImages, decoded row by row when indexed
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    origin: str


def check_source(src: Source) -> Source:
    """Raise DataError unless images are [N, H, W, C] uint8 and labels are 0..C-1 of matching length."""
    n_cls = len(src.classes)
    for split, x, y in (("train", src.x_train, src.y_train), ("test", src.x_test, src.y_test)):
        if x.ndim != 4 or x.dtype != np.uint8 or x.shape[-1] not in (1, 3):
            raise DataError(f"{src.origin}: {split} images have shape {x.shape} and dtype {x.dtype}; "
                            f"expected [N, H, W, 1|3] uint8")
        if y.shape != (x.shape[0],):
            raise DataError(f"{src.origin}: {split} has {x.shape[0]} images but labels of shape {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= n_cls):
            raise DataError(f"{src.origin}: {split} labels span {y.min()}..{y.max()}, expected 0..{n_cls - 1}")
    if src.x_train.shape[1:] != src.x_test.shape[1:]:
        raise DataError(f"{src.origin}: train images {src.x_train.shape[1:]} differ from test {src.x_test.shape[1:]}")
    return src


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {body.size} bytes (truncated?)")
    return body.reshape(dims)


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem, f"raw/{stem}.gz", f"raw/{stem}", f"FashionMNIST/raw/{stem}"):
        if (root / name).is_file():
            return root / name
    return None


def load_fashion_mnist(root: str | None) -> Source:
    """Fashion-MNIST from `root`, else Debian's dataset-fashion-mnist, else the torchvision download."""
    tried = []
    for cand in [Path(root)] if root else [DEBIAN_FASHION_MNIST]:
        files = {s: _find_idx(cand, s) for s in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
        if all(files.values()):
            xtr, ytr, xte, yte = (_read_idx(p) for p in files.values())
            return check_source(Source(xtr[..., None], ytr.astype(np.int64), xte[..., None], yte.astype(np.int64),
                                       FASHION_MNIST_CLASSES, f"fashion_mnist:{cand}"))
        tried.append(str(cand))
    if root:  # an explicit root that lacks the files is a user error, not a cue to download
        raise DataError(f"data.root={root}: no Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...) found")
    cache = Path(os.environ.get("TORCHVISION_DATA", Path.home() / ".cache" / "torchvision"))
    try:
        from torchvision.datasets import FashionMNIST
        tr, te = (FashionMNIST(str(cache), train=t, download=True) for t in (True, False))
    except Exception as err:  # network or disk: report what was tried
        raise DataError(f"Fashion-MNIST not found in {', '.join(tried)} and the torchvision download to {cache} "
                        f"failed ({type(err).__name__}); install Debian's dataset-fashion-mnist or set data.root")
    return check_source(Source(tr.data.numpy()[..., None], tr.targets.numpy().astype(np.int64),
                               te.data.numpy()[..., None], te.targets.numpy().astype(np.int64),
                               FASHION_MNIST_CLASSES, f"fashion_mnist:{cache}"))


def load_digits(root: str | None) -> Source:
    """scikit-learn's 8x8 digits (1,797 images), split 80/20 per class with a fixed seed, scaled to 0..255."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    y = bunch.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return check_source(Source(xtr, ytr, xte, yte, tuple(str(c) for c in range(10)), "digits:sklearn"))


def _torchvision_cifar(name: str, root: str | None) -> Source:
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    where = root or str(Path.home() / ".cache" / "torchvision")
    try:
        tr, te = (cls(where, train=t, download=True) for t in (True, False))
    except Exception as err:
        raise DataError(f"{name}: not found under {where} and the download failed ({type(err).__name__}); "
                        f"set data.root to a folder holding the torchvision archive") from None
    return check_source(Source(np.asarray(tr.data), np.asarray(tr.targets, np.int64), np.asarray(te.data),
                               np.asarray(te.targets, np.int64), tuple(tr.classes), f"{name}:{where}"))


class FolderImages:
    """The images of a folder tree as a lazy [N, size, size, 3] uint8 array: indexing decodes only the rows asked
    for, so prepare reads the val hold-out and the train_limit subset of ImageNet, never all 1.28M images."""

    ndim, dtype = 4, np.dtype(np.uint8)

    def __init__(self, files: list[Path], size: int, resize: int | None = None):
        self.files, self.size, self.resize = files, size, resize or size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), self.size, self.size, 3)

    def __getitem__(self, idx: np.ndarray | slice) -> np.ndarray:
        picked = self.files[idx] if isinstance(idx, slice) else [self.files[i] for i in np.asarray(idx)]
        return np.stack([self.decode(p) for p in picked]) if picked else np.zeros((0, *self.shape[1:]), np.uint8)

    def decode(self, path: Path) -> np.ndarray:
        """One image as [size, size, 3] uint8: its shorter side resized to `resize` (bicubic), then centre-cropped."""
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = self.resize / min(im.size)  # resize the shorter side, then center-crop
            im = im.resize((max(self.resize, round(im.width * scale)), max(self.resize, round(im.height * scale))),
                           Image.BICUBIC)
            left, top = (im.width - self.size) // 2, (im.height - self.size) // 2
            return np.asarray(im.crop((left, top, left + self.size, top + self.size)), dtype=np.uint8)


def _read_folder(split_dir: Path, classes: list[str], size: int, resize: int | None
                 ) -> tuple[FolderImages, np.ndarray]:
    files, ys = [], []
    for label, cls in enumerate(classes):
        found = sorted(p for p in (split_dir / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"imagefolder: class folder {split_dir / cls} holds no images")
        files += found
        ys += [label] * len(found)
    return FolderImages(files, size, resize), np.asarray(ys, np.int64)


def load_imagefolder(root: str | None, image_size: int = 64, resize: int | None = None) -> Source:
    """An ImageNet-layout tree root/{train,val}/<class>/<image>, its shorter side resized to `resize` (None:
    `image_size`) and center-cropped to `image_size` when its rows are read (lazily: see FolderImages); resize 256
    at 224 is the evaluation preprocessing of MAE and MIM-Refiner."""
    if not root:
        raise DataError("imagefolder: set data.root to a folder with train/ and val/ class subfolders")
    base = Path(root)
    for split in ("train", "val"):
        if not (base / split).is_dir():
            raise DataError(f"imagefolder: missing folder {base / split}")
    classes = sorted(d.name for d in (base / "train").iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"imagefolder: {base / 'train'} has no class folders")
    xtr, ytr = _read_folder(base / "train", classes, image_size, resize)
    xte, yte = _read_folder(base / "val", classes, image_size, resize)
    return check_source(Source(xtr, ytr, xte, yte, tuple(classes), f"imagefolder:{base}"))


# FACTS (pipeline/data/facts.py, imported above) holds what is known of these datasets before prepare runs, keyed
# like SOURCES; config validation reads it from there, without importing this module
SOURCES: dict[str, Callable[..., Source]] = {
    "fashion_mnist": load_fashion_mnist,
    "digits": load_digits,
    "cifar10": lambda root: _torchvision_cifar("cifar10", root),
    "cifar100": lambda root: _torchvision_cifar("cifar100", root),
    "imagefolder": load_imagefolder,
}


def load_source(name: str, root: str | None, image_size: int, resize: int | None = None) -> Source:
    """Load dataset `name`; `image_size` and `resize` apply to ImageFolder trees, whose images vary in size."""
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(SOURCES)})")
    if name == "imagefolder":
        return load_imagefolder(root, image_size, resize)
    return SOURCES[name](root)
