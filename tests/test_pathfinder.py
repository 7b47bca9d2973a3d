"""Tests for the Pathfinder / Path-X generator, the LRA release reader and the two tasks.

The label check is independent of the generator's bookkeeping: it looks only at the drawn
pixels (markers found by their gray level, connectivity by :mod:`scipy.ndimage`).
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from attnbench import records
from attnbench.config import validate_profile
from attnbench.data import pathfinder as pf
from attnbench.runner import prepare_data, run_job
from attnbench.tasks.base import TaskSetup, get_task, make_data_config

EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity


def markers_connected(image: np.ndarray, spec: pf.PathfinderSpec, dilate: bool = True) -> bool:
    """Are the two markers in one component of the ink, bridging gaps of up to link_max?

    A k×k dilation (k = gap + 1) joins exactly the pixels at most k apart (Chebyshev).
    """
    ink = image > 0
    if dilate:
        k = spec.gap + 1
        ink = ndimage.binary_dilation(ink, structure=np.ones((k, k), dtype=bool))
    components, _ = ndimage.label(ink, structure=EIGHT)
    marks, n_marks = ndimage.label(image == spec.marker_value, structure=EIGHT)
    assert n_marks == 2, f"expected 2 separate markers, found {n_marks}"
    first = np.unique(components[marks == 1])
    second = np.unique(components[marks == 2])
    assert len(first) == 1 and len(second) == 1
    return bool(first[0] == second[0])


CASES = [(16, "baseline", 120), (32, "hard", 120), (64, "hard", 40)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}px-{c[1]}")
def generated(request) -> tuple[pf.PathfinderSpec, np.ndarray, np.ndarray]:
    resolution, difficulty, n = request.param
    spec = pf.lra_spec(resolution, difficulty)
    images, labels = pf.generate_split(spec, n, seed=11, split="train")
    return spec, images, labels


def test_label_is_marker_connectivity(generated) -> None:
    spec, images, labels = generated
    assert set(np.unique(images)) <= {0, spec.dash_value, spec.marker_value}
    for image, label in zip(images, labels, strict=True):
        assert markers_connected(image, spec) == bool(label)


def test_dashes_have_gaps_that_the_check_bridges(generated) -> None:
    # Without the dilation no two markers touch the same ink: the gaps between dashes are
    # real, so the connectivity check above is not satisfied by solid lines.
    spec, images, labels = generated
    assert labels.any() and not labels.all()
    for image in images:
        assert not markers_connected(image, spec, dilate=False)


def test_images_have_distractors_and_both_target_paths(generated) -> None:
    spec, images, _ = generated
    k = spec.gap + 1
    counts = []
    for image in images:
        ink = ndimage.binary_dilation(image > 0, structure=np.ones((k, k), dtype=bool))
        counts.append(ndimage.label(ink, structure=EIGHT)[1])
    # every image holds the two target paths; most also hold distractor paths
    assert min(counts) >= 2
    assert np.mean(np.array(counts) > 2) > 0.5


@pytest.mark.parametrize("n", [10, 11, 1])
def test_classes_are_balanced_by_construction(n: int) -> None:
    for split in pf.SPLITS:
        labels = pf.balanced_labels(n, seed=3, split=split)
        assert labels.dtype == np.uint8 and len(labels) == n
        assert int(labels.sum()) == n // 2


def test_same_seed_same_images_other_seed_or_split_differs() -> None:
    spec = pf.lra_spec(32, "intermediate")
    a, la = pf.generate_split(spec, 12, seed=5, split="val")
    b, lb = pf.generate_split(spec, 12, seed=5, split="val")
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    c, _ = pf.generate_split(spec, 12, seed=6, split="val")
    d, _ = pf.generate_split(spec, 12, seed=5, split="test")
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d)
    assert len({img.tobytes() for img in a}) == len(a)  # no duplicate images


def test_parallel_writing_gives_the_same_file(tmp_path: Path) -> None:
    spec = pf.lra_spec(16, "baseline")
    expected, labels = pf.generate_split(spec, 24, seed=1, split="test")
    one = pf.write_split(tmp_path / "one.npy", spec, 24, seed=1, split="test")
    two = pf.write_split(tmp_path / "two.npy", spec, 24, seed=1, split="test", workers=2)
    assert np.array_equal(one, labels) and np.array_equal(two, labels)
    assert np.array_equal(np.load(tmp_path / "one.npy"), expected)
    assert np.array_equal(np.load(tmp_path / "two.npy"), expected)


def marker_features(images: np.ndarray, spec: pf.PathfinderSpec) -> np.ndarray:
    """(y1, x1, y2, x2, distance) of the two marker centroids, found by gray level only.

    The two markers are ordered (row, then column) so that the pair is described the same
    way whatever order the generator drew them in.
    """
    rows = []
    for image in images:
        marks, n_marks = ndimage.label(image == spec.marker_value, structure=EIGHT)
        assert n_marks == 2
        centres = ndimage.center_of_mass(image == spec.marker_value, marks, [1, 2])
        (y1, x1), (y2, x2) = sorted(centres)
        rows.append([y1, x1, y2, x2, np.hypot(y2 - y1, x2 - x1)])
    return np.array(rows)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("resolution", "difficulty"), [(16, "baseline"), (32, "hard")])
def test_the_label_does_not_move_the_markers(seed: int, resolution: int, difficulty: str) -> None:
    # Same random stream, other label: identical marker pixels, opposite connectivity. So the
    # marker positions cannot carry the label.
    spec = pf.lra_spec(resolution, difficulty)
    pos = pf.draw_sample(spec, 1, random.Random(seed))
    neg = pf.draw_sample(spec, 0, random.Random(seed))
    assert np.array_equal(pos == spec.marker_value, neg == spec.marker_value)
    assert markers_connected(pos, spec) and not markers_connected(neg, spec)
    # both images hold two full target paths besides the distractors
    for image in (pos, neg):
        assert (image > 0).sum() >= 2 * spec.contour_length * spec.dash_length


@pytest.fixture(scope="module", params=[(16, "baseline"), (20, "intermediate")], ids=str)
def marker_sets(request) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Marker features and labels of 2,000 training and 1,000 test images."""
    spec = pf.lra_spec(*request.param)
    train, train_labels = pf.generate_split(spec, 2000, seed=21, split="train")
    test, test_labels = pf.generate_split(spec, 1000, seed=21, split="test")
    return (
        marker_features(train, spec),
        train_labels,
        marker_features(test, spec),
        test_labels,
    )


def test_marker_positions_do_not_predict_the_label(marker_sets) -> None:
    # A linear model, gradient-boosted trees and k-nearest neighbours on the marker geometry
    # alone stay at chance (the original construction gave trees about 77 % at 16x16).
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train, x_test, y_test = marker_sets
    models = {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression()),
        "boosted trees": HistGradientBoostingClassifier(max_iter=100, random_state=0),
        "25-NN": make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=25)),
    }
    for name, model in models.items():
        accuracy = model.fit(x_train, y_train).score(x_test, y_test)
        assert accuracy <= 0.55, f"{name} reads the label off the markers: {accuracy:.3f}"


def test_marker_distance_is_distributed_alike_in_both_classes(marker_sets) -> None:
    from scipy.stats import ks_2samp

    x_train, y_train, _, _ = marker_sets
    distance = x_train[:, 4]
    positive, negative = distance[y_train == 1], distance[y_train == 0]
    assert ks_2samp(positive, negative).pvalue > 0.01
    # and each marker's position too (row and column of both)
    for column in range(4):
        assert ks_2samp(x_train[y_train == 1, column], x_train[y_train == 0, column]).pvalue > 0.01
    assert distance.std() > 1.0  # not a degenerate (constant) geometry


def test_bad_specs_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="difficulty 'easy'; valid choices: baseline"):
        pf.lra_spec(32, "easy")
    with pytest.raises(ValueError, match="resolution must be an integer >= 16"):
        pf.lra_spec(8)
    with pytest.raises(ValueError, match="dash_value and marker_value must differ"):
        replace(pf.lra_spec(32), dash_value=255)
    with pytest.raises(ValueError, match="max_turn"):
        pf.lra_spec(32, max_turn=90.0)
    tight = pf.lra_spec(16, "hard", max_attempts=3)
    with pytest.raises(ValueError, match="no room for two paths of 14 dashes in a 16x16") as err:
        pf.draw_sample(tight, 1, random.Random(0))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        pf.draw_sample(pf.lra_spec(32), 2, random.Random(0))


# ---------------------------------------------------------------------------------------
# LRA release files
# ---------------------------------------------------------------------------------------
def _write_release(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """A pathfinder32 tree in the release layout; metadata 0 as text, 1 as numpy.save."""
    base = root / "pathfinder32" / "curv_contour_length_14"
    rows = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        batch = 0 if i < len(images) // 2 else 10  # numeric (not lexical) order: 0, 10
        folder = base / "imgs" / str(batch)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"sample_{i}.png")
        # subpath, file, image number, label, continuity, contour length, distractor length,
        # paddle length, paddle thickness, paddle margin, number of paddle contrasts
        rows.append((batch, [f"imgs/{batch}", f"sample_{i}.png", str(i), str(int(label))]))
        rows[-1][1].extend(["1.0", "14", "4", "2", "0.5", "1", "1"])
    (base / "imgs" / "0" / "sample_empty.png").write_bytes(b"")  # LRA skips empty files
    (base / "metadata").mkdir(parents=True)
    text = [" ".join(cols) for batch, cols in rows if batch == 0]
    text.append(" ".join(["imgs/0", "sample_empty.png", "99", "1", *["0"] * 7]))
    (base / "metadata" / "0.npy").write_text("\n".join(text) + "\n")
    np.save(base / "metadata" / "10.npy", np.array([cols for batch, cols in rows if batch == 10]))
    return root / "pathfinder32"


def test_metadata_reader_reads_text_and_numpy_files(tmp_path: Path) -> None:
    text = tmp_path / "0.npy"
    text.write_text("imgs/0 sample_0.png 0 1 1.0 14\nimgs/0 sample_1.png 1 0 1.0 14\n")
    assert pf.read_metadata(text) == [
        ["imgs/0", "sample_0.png", "0", "1", "1.0", "14"],
        ["imgs/0", "sample_1.png", "1", "0", "1.0", "14"],
    ]
    binary = tmp_path / "1.npy"
    np.save(binary, np.array([["imgs/1", "sample_0.png", "0", "0"]]))
    assert pf.read_metadata(binary) == [["imgs/1", "sample_0.png", "0", "0"]]


def test_release_reader_and_task_prepare(tmp_path: Path) -> None:
    spec = pf.lra_spec(32, "hard")
    images, labels = pf.generate_split(spec, 16, seed=2, split="train")
    root = _write_release(tmp_path / "lra", images, labels)
    rows, empty = pf.list_lra_release(root, "hard")
    assert [r.image.name for r in rows[:2]] == ["sample_0.png", "sample_1.png"]
    assert rows[-1].image.parent.name == "10"
    assert [p.name for p in empty] == ["sample_empty.png"]
    assert [r.label for r in rows] == labels.tolist()

    cls = get_task("pathfinder")
    values = {"source": "lra-release", "path": str(root), "n_train": 10, "n_val": 3, "n_test": 3}
    task = cls(make_data_config(cls, values))
    task.prepare(tmp_path / "prepared")
    task.load(tmp_path / "prepared")
    by_pixels = {img.tobytes(): int(lab) for img, lab in zip(images, labels, strict=True)}
    seen = []
    for split, n in (("train", 10), ("val", 3), ("test", 3)):
        data = task.splits[split]
        assert len(data) == n
        for pixels, label in zip(data.pixels, data.labels, strict=True):
            key = np.asarray(pixels).reshape(32, 32).tobytes()
            assert by_pixels[key] == label  # the PNG round trip keeps every pixel
            seen.append(key)
    assert len(set(seen)) == 16  # the splits are disjoint and use every image
    assert task.record_info()["empty_images_skipped"] == 1
    assert task.dataset_info().source == "lra-release" and not task.dataset_info().stand_in

    too_many = cls(make_data_config(cls, {**values, "n_train": 20}))
    with pytest.raises(ValueError, match=r"asks for 26 examples, but .* holds 16 usable"):
        too_many.prepare(tmp_path / "other")
    wrong_size = cls(make_data_config(cls, {**values, "resolution": 64}))
    with pytest.raises(ValueError, match="image is 32x32, expected 64x64"):
        wrong_size.prepare(tmp_path / "other2")
    (root / "curv_contour_length_14" / "imgs" / "10" / "sample_15.png").unlink()
    with pytest.raises(ValueError, match=r"sample_15\.png is missing"):
        pf.list_lra_release(root, "hard")


# ---------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------
def test_tasks_are_registered_with_lra_defaults() -> None:
    for name, side in (("pathfinder", 32), ("pathx", 128)):
        cls = get_task(name)
        assert cls.family == "lra" and cls.metric == "accuracy" and cls.higher_is_better
        task = cls(make_data_config(cls, {}))
        c = task.cfg
        assert (c.resolution, c.difficulty, c.source) == (side, "hard", "generated")
        assert (c.n_train, c.n_val, c.n_test) == (160_000, 20_000, 20_000)
        assert task.max_len() == side * side + 1
        assert task.dataset_info().stand_in  # generated images are not the LRA release


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"source": "png"}, r"tasks.pathx.data.source='png'; valid choices: generated, lra"),
        ({"source": "lra-release"}, r"tasks.pathx.data.path is required"),
        ({"resolution": 8}, r"tasks.pathx.data.resolution must be at least 16"),
        ({"difficulty": "easy"}, r"difficulty='easy'; valid choices: baseline, intermediate"),
        ({"n_val": 0}, r"tasks.pathx.data.n_val must be positive"),
        ({"colour": 1}, r"unknown key\(s\) colour"),
    ],
)
def test_bad_data_config_is_a_one_line_error(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        make_data_config(get_task("pathx"), values)
    assert "\n" not in str(err.value)


def test_tokens_are_the_pixels(tmp_path: Path) -> None:
    cls = get_task("pathfinder")
    values = {"resolution": 16, "difficulty": "baseline", "n_train": 20, "n_val": 6, "n_test": 6}
    task = cls(make_data_config(cls, {**values, "seed": 4}))
    task.prepare(tmp_path)
    task.load(tmp_path)
    images = np.load(tmp_path / "train_images.npy")
    labels = np.load(tmp_path / "train_labels.npy")
    expected, _ = pf.generate_split(task.spec(), 20, seed=4, split="train")
    assert np.array_equal(images, expected)
    batches = list(task.batches("train", 8, shuffle=True, epoch=1, seed=3))
    order = torch.cat([b.index for b in batches]).tolist()
    assert sorted(order) == list(range(20))
    for batch in batches:
        ids = batch.inputs["ids"]
        assert ids.shape[1] == 16 * 16 + 1 and (ids[:, 0] == 1).all()
        assert "key_padding" not in batch.inputs  # fixed length: nothing to mask
        pixels = (ids[:, 1:] - pf.PIXEL_OFFSET).numpy().reshape(-1, 16, 16)
        assert np.array_equal(pixels, images[batch.index.numpy()])
        assert batch.targets.tolist() == labels[batch.index.numpy()].tolist()
    # a fixed-length variant asking for more room gets padding and a mask
    task = cls(task.cfg, TaskSetup(pad_to=300))
    task.load(tmp_path)
    batch = next(task.batches("val", 4))
    assert batch.inputs["ids"].shape == (4, 300)
    assert batch.inputs["key_padding"].sum(1).tolist() == [257] * 4
    baselines = task.baselines()  # marker_positions: tests/test_baselines.py
    assert baselines["majority_class"] == 0.5 and set(baselines) == {
        "majority_class",
        "marker_positions",
    }


def test_prepare_run_job_writes_a_record(tmp_path: Path) -> None:
    profile = validate_profile(
        {
            "profile": "tiny-pathfinder",
            "output_dir": str(tmp_path),
            "model": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32},
            "train": {"steps": 4, "batch_size": 8, "eval_every": 2, "warmup_steps": 1},
            "tasks": {
                "pathfinder": {
                    "data": {
                        "resolution": 16,
                        "difficulty": "baseline",
                        "n_train": 32,
                        "n_val": 16,
                        "n_test": 16,
                    }
                }
            },
        }
    )
    data = tmp_path / "data"
    prepare_data(profile, "pathfinder", data)
    out = tmp_path / "runs" / "seed0.json"
    record = run_job(
        profile, "pathfinder", "vanilla", 0, data_dir=data, record_file=out, progress=False
    )
    assert records.validate_record(record) is None
    saved = json.loads(out.read_text())
    assert saved["status"] == "ok" and saved["task"] == "pathfinder"
    assert 0.0 <= saved["metrics"]["test"]["accuracy"] <= 1.0
    assert saved["metrics"]["baselines"]["majority_class"] == 0.5
    assert saved["dataset"]["name"] == "pathfinder-gen-16-baseline"
    assert saved["task_info"]["sequence_length"] == 256
    assert saved["config"]["model"]["max_len"] == 257
