"""LRA Pathfinder and Path-X: are the two marked dots joined by a dashed path? (2 classes)

Tay et al. 2021, "Long Range Arena: A Benchmark for Efficient Transformers", after Linsley et
al. 2018, "Learning long-range spatial dependencies with horizontal gated recurrent units".
An image is read as a sequence of pixels, one token per pixel (gray level + 2, so [PAD] = 0
and [CLS] = 1 stay free): Pathfinder uses 32×32 images (1,024 tokens), Path-X 128×128
(16,384 tokens; every LRA model stayed at chance). LRA trains on the ``hard`` level
(``curv_contour_length_14``), split 160K/20K/20K.

``source: generated`` draws the images with attnbench's seeded generator
(:mod:`attnbench.data.pathfinder`): the same task, but not the released images, so the
dataset is marked as a stand-in. ``source: lra-release`` reads the LRA release files
(``path`` = the release's ``pathfinder32`` / ``pathfinder128`` directory). The resolution is a
knob down to 16×16 (256 tokens) for CPU profiles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from attnbench import baselines as bl
from attnbench.attention import Requirements
from attnbench.data import pathfinder as pf
from attnbench.tasks.base import (
    CLS_ID,
    PAD_ID,
    Batch,
    DatasetInfo,
    EmptySplitError,
    Evaluation,
    SequenceClassificationTask,
    TaskSetup,
    register_task,
)

SOURCES = ("generated", "lra-release")
INFO_FILE = "pathfinder.json"
PARALLEL_FROM = 20_000  # images in a split from which generation uses several processes
MAX_WORKERS = 16


@dataclass
class PathfinderData:
    """Data knobs (``tasks.pathfinder.data``); defaults are LRA's Pathfinder protocol."""

    task: ClassVar[str] = "pathfinder"

    source: str = "generated"  # "generated" (seeded generator) | "lra-release" (PNG files)
    path: str | None = None  # lra-release: the release's pathfinder<resolution> directory
    resolution: int = 32  # image side; the sequence has resolution² pixel tokens
    difficulty: str = "hard"  # baseline | intermediate | hard (6 / 9 / 14 dashes per path)
    n_train: int = 160_000  # LRA: 80/10/10 of the 200K images of one difficulty
    n_val: int = 20_000
    n_test: int = 20_000
    seed: int = 0  # data seed (generation, or the split of the release files)

    def __post_init__(self) -> None:
        where = f"tasks.{self.task}.data"
        if self.source not in SOURCES:
            raise ValueError(f"{where}.source={self.source!r}; valid choices: {', '.join(SOURCES)}")
        if self.source == "lra-release" and not self.path:
            raise ValueError(f"{where}.path is required when source is lra-release")
        if self.resolution < 16:
            raise ValueError(f"{where}.resolution must be at least 16, got {self.resolution}")
        if self.difficulty not in pf.DIFFICULTIES:
            raise ValueError(
                f"{where}.difficulty={self.difficulty!r}; "
                f"valid choices: {', '.join(pf.DIFFICULTIES)}"
            )
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{where}.{name} must be positive, got {getattr(self, name)}")


@dataclass
class PathXData(PathfinderData):
    """Data knobs (``tasks.pathx.data``); defaults are LRA's Path-X protocol."""

    task: ClassVar[str] = "pathx"

    resolution: int = 128


@dataclass
class PixelSplit:
    """One split: ``pixels`` (N, resolution²) uint8 (possibly memory-mapped), ``labels`` (N,)."""

    pixels: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _files(split: str) -> tuple[str, str]:
    return f"{split}_images.npy", f"{split}_labels.npy"


class _PathfinderTask(SequenceClassificationTask):
    """Shared by Pathfinder and Path-X: pixels as tokens, binary label."""

    family = "lra"
    n_classes = 2
    # 2: the generator no longer gives the label away through the marker positions
    data_version = 2

    def __init__(self, data_cfg: Any, setup: TaskSetup | None = None) -> None:
        super().__init__(data_cfg, setup)
        self.info: dict[str, Any] = {}

    # -- description -------------------------------------------------------------------------
    def spec(self) -> pf.PathfinderSpec:
        return pf.lra_spec(self.cfg.resolution, self.cfg.difficulty)

    def sizes(self) -> dict[str, int]:
        c = self.cfg
        return {"train": c.n_train, "val": c.n_val, "test": c.n_test}

    def dataset_info(self) -> DatasetInfo:
        c = self.cfg
        side = f"{c.resolution}x{c.resolution}"
        counts = f"{c.n_train}/{c.n_val}/{c.n_test} examples"
        if c.source == "lra-release":
            return DatasetInfo(
                f"{self.name}-lra-{c.resolution}-{c.difficulty}",
                "lra-release",
                False,
                f"LRA release images {pf.LRA_DIRS[c.difficulty]} ({side}) from {c.path}, "
                f"seeded split {counts}",
            )
        spec = self.spec()
        return DatasetInfo(
            f"{self.name}-gen-{c.resolution}-{c.difficulty}",
            "generated",
            True,  # the same task, but not the released images: numbers are not LRA's
            f"Pathfinder-style dashed contours from attnbench's generator (not the LRA images), "
            f"{side}, {c.difficulty} ({spec.contour_length} dashes per path), seed {c.seed}, "
            f"balanced classes, {counts}",
        )

    def max_len(self) -> int:
        return self.cfg.resolution**2 + 1  # + [CLS]

    def vocab_size(self) -> int:
        return 256 + pf.PIXEL_OFFSET

    def requirements(self) -> Requirements:
        # Every image has the same length: no padding, so no key padding mask is needed.
        return Requirements(padding_mask=False, variable_length=False, max_len=self.max_len())

    # -- data --------------------------------------------------------------------------------
    def prepare(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.cfg.source == "lra-release":
            info = self._prepare_release(out_dir)
        else:
            info = self._prepare_generated(out_dir)
        info |= {"resolution": self.cfg.resolution, "difficulty": self.cfg.difficulty}
        (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")

    def _prepare_generated(self, out_dir: Path) -> dict[str, Any]:
        spec = self.spec()
        for split, n in self.sizes().items():
            images_file, labels_file = _files(split)
            # LRA-scale splits are drawn in parallel processes (the files are the same).
            large = n >= PARALLEL_FROM
            labels = pf.write_split(
                out_dir / images_file,
                spec,
                n,
                seed=self.cfg.seed,
                split=split,
                workers=min(os.cpu_count() or 1, MAX_WORKERS) if large else 1,
                progress=large,
            )
            np.save(out_dir / labels_file, labels)
        return {"source": "generated", "spec": asdict(spec)}

    def _prepare_release(self, out_dir: Path) -> dict[str, Any]:
        c = self.cfg
        rows, empty = pf.list_lra_release(Path(c.path), c.difficulty)
        sizes = self.sizes()
        need = sum(sizes.values())
        if len(rows) < need:
            raise ValueError(
                f"tasks.{self.name}.data asks for {need} examples, but {c.path} holds "
                f"{len(rows)} usable {pf.LRA_DIRS[c.difficulty]} images"
            )
        order = np.random.default_rng(c.seed).permutation(len(rows))
        start = 0
        for split, n in sizes.items():
            chosen = [rows[i] for i in order[start : start + n]]
            start += n
            images_file, labels_file = _files(split)
            images = np.lib.format.open_memmap(
                out_dir / images_file, "w+", np.uint8, (n, c.resolution, c.resolution)
            )
            for j, row in enumerate(chosen):
                images[j] = pf.read_png(row.image, c.resolution)
            images.flush()
            np.save(out_dir / labels_file, np.array([r.label for r in chosen], dtype=np.uint8))
        return {
            "source": "lra-release",
            "path": str(c.path),
            "images_listed": len(rows),
            "empty_images_skipped": [str(p) for p in empty],
        }

    def load(self, data_dir: Path) -> None:
        data_dir = Path(data_dir)
        side = self.cfg.resolution
        for split in pf.SPLITS:
            images_file, labels_file = _files(split)
            images = np.load(data_dir / images_file, mmap_mode="r")
            labels = np.load(data_dir / labels_file)
            if images.ndim != 3 or images.shape[1:] != (side, side) or images.dtype != np.uint8:
                raise ValueError(
                    f"{data_dir / images_file}: expected uint8 images of {side}x{side}, got "
                    f"{images.dtype} {images.shape}; rerun attnbench prepare"
                )
            if labels.shape != (len(images),) or not np.isin(labels, (0, 1)).all():
                raise ValueError(f"{data_dir / labels_file}: expected {len(images)} labels in 0/1")
            self.splits[split] = PixelSplit(images.reshape(len(images), side * side), labels)
        info_file = data_dir / INFO_FILE
        self.info = json.loads(info_file.read_text()) if info_file.exists() else {}

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        epoch: int = 0,
        seed: int = 0,
        by_length: bool = False,  # every image has one length: split order is length order
    ) -> Iterator[Batch]:
        data: PixelSplit = self.splits[split]
        n = len(data)
        if n == 0:
            raise EmptySplitError(f"task {self.name!r}: split {split!r} is empty")
        if shuffle:  # the order is a pure function of (seed, epoch), as in the base class
            gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
            order = torch.randperm(n, generator=gen).numpy()
        else:
            order = np.arange(n)
        length = data.pixels.shape[1]
        width = max(self.setup.pad_to or 0, length + 1)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            ids = torch.full((len(idx), width), PAD_ID, dtype=torch.long)
            ids[:, 0] = CLS_ID
            pixels = torch.from_numpy(np.asarray(data.pixels[idx], dtype=np.int64))
            ids[:, 1 : length + 1] = pixels + pf.PIXEL_OFFSET
            inputs = {"ids": ids}
            if width > length + 1:
                inputs["key_padding"] = ids != PAD_ID
            targets = torch.from_numpy(data.labels[idx].astype(np.int64))
            yield Batch(inputs, targets, len(idx) * (length + 1), torch.from_numpy(idx))

    def baselines(self) -> dict[str, float]:
        """Test accuracy of ``majority_class`` and, for generated images, ``marker_positions``.

        ``marker_positions``: k nearest neighbours (k chosen on val) on where the two
        endpoint markers are and nothing else — their centres (pixels of the generator's
        ``marker_value``, :func:`attnbench.baselines.blob_centroids`) and their vertical,
        horizontal and Euclidean distances. A model below it need not trace any path.
        The LRA release images have no marker gray level of their own, so they get
        ``majority_class`` only.
        """
        train, test = self.splits.get("train"), self.splits.get("test")
        if not train or not test:
            return {}
        result = {"majority_class": bl.majority_class(train.labels, test.labels)}
        if self.cfg.source == "generated" and self.splits.get("val"):
            features = {split: self._baseline_marker_features(split) for split in pf.SPLITS}
            labels = {split: self.splits[split].labels.astype(np.int64) for split in pf.SPLITS}
            predictions, _ = bl.select_knn(
                features["train"], labels["train"], features["val"], labels["val"], features["test"]
            )
            result["marker_positions"] = bl.accuracy(predictions, labels["test"])
        return result

    def _baseline_marker_features(self, split: str) -> np.ndarray:
        """(N, 7): marker centres ``y1 x1 y2 x2``, ``|y2 − y1|``, ``|x2 − x1|``, distance."""
        side = self.cfg.resolution
        value = self.info.get("spec", {}).get("marker_value", self.spec().marker_value)
        images = np.asarray(self.splits[split].pixels).reshape(-1, side, side)
        centres = bl.blob_centroids(images, value)
        dy, dx = centres[:, 2] - centres[:, 0], centres[:, 3] - centres[:, 1]
        return np.column_stack([centres, np.abs(dy), np.abs(dx), np.hypot(dy, dx)])

    def record_info(self, evaluation: Evaluation | None = None) -> dict[str, Any]:
        c = self.cfg
        info: dict[str, Any] = {
            "resolution": c.resolution,
            "sequence_length": c.resolution**2,
            "difficulty": c.difficulty,
        }
        if "spec" in self.info:
            info["generator"] = self.info["spec"]
        if "empty_images_skipped" in self.info:
            info["empty_images_skipped"] = len(self.info["empty_images_skipped"])
        return info | super().record_info(evaluation)


@register_task
class Pathfinder(_PathfinderTask):
    """LRA Pathfinder: 32×32 images as 1,024 pixel tokens, connected or not (accuracy)."""

    averages = (("LRA", 5), ("LRA with Path-X", 6))

    name = "pathfinder"
    DataConfig = PathfinderData


@register_task
class PathX(_PathfinderTask):
    """LRA Path-X: 128×128 images as 16,384 pixel tokens, connected or not (accuracy)."""

    averages = (("LRA with Path-X", 6),)

    name = "pathx"
    DataConfig = PathXData
