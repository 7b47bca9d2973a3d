"""LRA Image: classify an image from its grayscale pixels read as a sequence (CIFAR-10).

Tay et al. 2021, "Long Range Arena: A Benchmark for Efficient Transformers", §3.4
(after Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images").
Each 32×32 CIFAR-10 image becomes 1024 tokens, one per 8-bit grayscale pixel, row by
row (:mod:`attnbench.data.lra`: pixel v → token v + 2): no patches and no 2-d
prior, so the model must find spatial structure in a flat sequence where vertical
neighbours are 32 positions apart. Grayscale is LRA's ``tf.image.rgb_to_grayscale``,
``⌊(0.2989·R + 0.5870·G + 0.1140·B) · 255.5 / 255⌋`` (exact; see
:func:`attnbench.data.lra.rgb_to_gray`). Splits follow LRA's code: the first 90 % of
the training split for training, the last 10 % for validation (45,000 / 5,000), and
the 10,000 test images.

Data sources (both read through :func:`attnbench.data.hf.load_hf_dataset`)
    ``huggingface``: ``load_hf_dataset(hf_path, hf_name)``, splits ``train`` / ``test``,
    rows ``{"img": PIL image, "label": 0–9}`` (HF ``cifar10``); ``hf_path`` may be a
    local directory of files in that schema.

    ``bundled`` (offline stand-in, labelled as such): ``fashion_mnist.parquet``
    (Xiao et al. 2017, "Fashion-MNIST"), already grayscale 28×28 = 784 pixels,
    10 classes; the same 90/10 rule splits its ``train`` rows.

``pool`` (default 1) mean-pools k×k blocks before tokenizing, for reduced-length runs:
``pool: 2`` gives 14×14 = 196 tokens for Fashion-MNIST (16×16 for CIFAR-10). LRA does
not downsample; records carry the side length used.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from attnbench import baselines as bl
from attnbench.attention import Requirements
from attnbench.data import lra
from attnbench.data.bundled import read_table
from attnbench.data.hf import load_hf_dataset
from attnbench.tasks.base import (
    DatasetInfo,
    Evaluation,
    SequenceClassificationTask,
    register_task,
)

SOURCES = ("huggingface", "bundled")
SIDES = {"huggingface": 32, "bundled": 28}  # CIFAR-10, Fashion-MNIST
SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.1  # LRA: train[:90%] / train[90%:]


@dataclass
class ImageData:
    """Data knobs (``tasks.image.data``); defaults are LRA's (CIFAR-10, 32×32, all images)."""

    source: str = "huggingface"  # "huggingface" (CIFAR-10, LRA) | "bundled" (Fashion-MNIST)
    hf_path: str = "cifar10"  # HF dataset id, or a local directory with train/test files
    hf_name: str | None = None
    path: str | None = None  # bundled: the Fashion-MNIST parquet (None: the copy shipped here)
    pool: int = 1  # k×k mean pooling before tokenizing (1: none, LRA)
    n_train: int | None = None  # None: all (CIFAR-10 45,000); else a seeded subset
    n_val: int | None = None  # None: all (CIFAR-10 5,000)
    n_test: int | None = None  # None: all (CIFAR-10 10,000)
    seed: int = 0  # subsampling (the data seed, not the training seed)

    def __post_init__(self) -> None:
        where = "tasks.image.data"
        if self.source not in SOURCES:
            raise ValueError(f"{where}.source={self.source!r}; valid choices: {', '.join(SOURCES)}")
        side = SIDES[self.source]
        if self.pool < 1 or side % self.pool:
            valid = ", ".join(str(k) for k in range(1, side + 1) if side % k == 0)
            raise ValueError(f"{where}.pool={self.pool} for {side}x{side} images; valid: {valid}")
        for name in ("n_train", "n_val", "n_test"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{where}.{name} must be positive or null, got {value}")

    @property
    def side(self) -> int:
        """Side length of the images the model sees (after pooling)."""
        return SIDES[self.source] // self.pool


@register_task
class LRAImage(SequenceClassificationTask):
    """LRA Image: 10-way classification of grayscale images as pixel sequences (accuracy)."""

    # CIFAR-10 (Krizhevsky 2009; HF uoft-cs/cifar10)
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {
        "cifar10": {"train": 50_000, "test": 10_000},
        "cifar10/plain_text": {"train": 50_000, "test": 10_000},
    }

    averages = (("LRA", 5), ("LRA with Path-X", 6))

    name = "image"
    family = "lra"
    n_classes = 10
    DataConfig = ImageData

    def requirements(self) -> Requirements:
        # Every image has the same length: no padding, so no padding mask is needed.
        return Requirements(padding_mask=False, variable_length=False, max_len=self.max_len())

    def dataset_info(self) -> DatasetInfo:
        c = self.cfg
        size = f"{c.side}x{c.side}" + (f" ({c.pool}x{c.pool} mean-pooled)" if c.pool > 1 else "")
        if c.source == "huggingface":
            return DatasetInfo(
                f"{Path(c.hf_path).name or c.hf_path}-gray",
                "huggingface",
                False,
                f"CIFAR-10 ({c.hf_path}) as 8-bit grayscale pixel tokens, {size}",
            )
        return DatasetInfo(
            "fashion-mnist",
            "bundled",
            True,
            f"Fashion-MNIST pixel tokens, {size} (offline stand-in for LRA Image / CIFAR-10)",
        )

    def max_len(self) -> int:
        return self.cfg.side**2 + 1  # + [CLS]

    def vocab_size(self) -> int:
        return lra.VOCAB_SIZE

    # -- data -------------------------------------------------------------------------------
    def prepare(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        c = self.cfg
        if c.source == "huggingface":
            train_images, train_labels = _hf_images(c.hf_path, c.hf_name, "train")
            test_images, test_labels = _hf_images(c.hf_path, c.hf_name, "test")
        else:
            table = read_table("fashion_mnist", c.path)
            train_images, train_labels = _fashion_images(table, "train")
            test_images, test_labels = _fashion_images(table, "test")
        cut = len(train_labels) - round(VAL_FRACTION * len(train_labels))
        rng = random.Random(c.seed)
        parts = {
            "train": (train_images[:cut], train_labels[:cut], c.n_train),
            "val": (train_images[cut:], train_labels[cut:], c.n_val),
            "test": (test_images, test_labels, c.n_test),
        }
        for split, (images, labels, n) in parts.items():
            keep = range(len(labels)) if n is None else _subset(len(labels), n, split, rng)
            pixels = [lra.mean_pool(images[i], c.pool).reshape(-1) for i in keep]
            lra.save_packed(out_dir / f"{split}.npz", [labels[i] for i in keep], tokens=pixels)

    def load(self, data_dir: Path) -> None:
        for split in SPLITS:
            labels, columns = lra.load_packed(Path(data_dir) / f"{split}.npz")
            tokens = columns["tokens"]
            if any(len(t) != self.cfg.side**2 for t in tokens):
                raise ValueError(
                    f"image data in {data_dir} is not {self.cfg.side}x{self.cfg.side}; "
                    "rerun attnbench prepare for task 'image'"
                )
            self.splits[split] = list(zip(tokens, labels, strict=True))

    def baselines(self) -> dict[str, float]:
        """The base class's, plus ``linear_pixels``: logistic regression on the pixels.

        One feature per position, the gray level scaled to [0, 1]: a linear classifier that
        sees where each intensity is (the bag of pixel values does not), fit on train with
        its L2 strength chosen on val (:func:`attnbench.baselines.select_linear`).
        """
        result = super().baselines()
        if result and self.splits.get("val"):
            pixels, labels = {}, {}
            for split in SPLITS:
                tokens = [np.asarray(t, dtype=np.float64) for t, _ in self.splits[split]]
                pixels[split] = (np.stack(tokens) - lra.OFFSET) / 255.0
                labels[split] = np.array([y for _, y in self.splits[split]], dtype=np.int64)
            model = bl.select_linear(
                pixels["train"], labels["train"], pixels["val"], labels["val"], self.n_classes
            )
            result["linear_pixels"] = bl.accuracy(model.predict(pixels["test"]), labels["test"])
        return result

    def record_info(self, evaluation: Evaluation | None = None) -> dict[str, Any]:
        c = self.cfg
        info = {"side": c.side, "pool": c.pool, "sequence_length": c.side**2}
        return info | super().record_info(evaluation)


def _subset(size: int, n: int, split: str, rng: random.Random) -> list[int]:
    if n > size:
        raise ValueError(f"tasks.image.data.n_{split}={n}, but the {split} split has {size}")
    return sorted(rng.sample(range(size), n))


def _hf_images(path: str, name: str | None, split: str) -> tuple[np.ndarray, list[int]]:
    """Grayscale uint8 images (N, 32, 32) and labels of a CIFAR-10-schema split."""
    ds = load_hf_dataset(path, name, split=split)
    lra.require_columns(ds.column_names, ("img", "label"), f"dataset {path} split {split}")
    side = SIDES["huggingface"]
    rgb = np.zeros((len(ds), side, side, 3), dtype=np.uint8)
    labels = []
    for i, row in enumerate(ds):
        image = np.asarray(row["img"].convert("RGB"))
        if image.shape != (side, side, 3):
            raise ValueError(
                f"dataset {path} split {split} row {i}: image is {image.shape[1]}x"
                f"{image.shape[0]}, CIFAR-10 images are {side}x{side}"
            )
        rgb[i] = image
        labels.append(_label(row["label"], f"dataset {path} split {split} row {i}"))
    return lra.rgb_to_gray(rgb), labels


def _fashion_images(table: Any, split: str) -> tuple[np.ndarray, list[int]]:
    """Images (N, 28, 28) and labels of one split of the bundled Fashion-MNIST table."""
    side = SIDES["bundled"]
    cols = lra.columns(table, ("split", "pixels", "label"), "the Fashion-MNIST table")
    rows = [
        (pixels, label)
        for s, pixels, label in zip(cols["split"], cols["pixels"], cols["label"], strict=True)
        if s == split
    ]
    if not rows:
        raise ValueError(f"the Fashion-MNIST file has no {split!r} rows")
    images = np.zeros((len(rows), side, side), dtype=np.uint8)
    for i, (pixels, _) in enumerate(rows):
        if len(pixels) != side * side:
            raise ValueError(f"Fashion-MNIST {split} row {i}: {len(pixels)} pixels, not 784")
        images[i] = np.frombuffer(pixels, dtype=np.uint8).reshape(side, side)
    return images, [
        _label(label, f"Fashion-MNIST {split} row {i}") for i, (_, label) in enumerate(rows)
    ]


def _label(value: Any, where: str) -> int:
    if not isinstance(value, int | np.integer) or not 0 <= value <= 9:
        raise ValueError(f"{where}: label {value!r}; valid: 0-9")
    return int(value)
