"""Every real data set, read by the tasks' own loading code, offline, from tiny local copies.

``tests/fixtures/`` holds copies laid out as each source publishes them (built by
``tests/fixtures/build_hf_fixtures.py``): the hub repositories wmt/wmt14, wmt/wmt16,
nyu-mll/glue, Salesforce/wikitext, stanfordnlp/imdb and uoft-cs/cifar10 (``README.md``
declaring the configurations, ``<config>/<split>-NNNNN-of-NNNNN.parquet``, the hub's
columns, features and label conventions such as GLUE's hidden test labels ``-1``), the
hub's parquet conversion of IWSLT 2017 (``<config>/<split>/0000.parquet`` on
``refs/convert/parquet``) and the official IWSLT 2017 release. Each test points the task
at a copy through its data config (``hf_path`` = the folder, the configuration as
``hf_name`` or ``data_dir``) with the HF libraries offline and an empty HF cache, and
runs the task's real ``prepare``/``load``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch

from attnbench.data import hf, parallel
from attnbench.tasks.base import get_task, make_data_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HUB = FIXTURES / "hf"
WMT = {name: HUB / "wmt" / name for name in ("wmt14", "wmt16")}
IWSLT_CONVERSION = HUB / "IWSLT" / "iwslt2017-refs-convert-parquet"
IWSLT_RELEASE = FIXTURES / "iwslt2017-release"
GLUE = HUB / "nyu-mll" / "glue"


@pytest.fixture(autouse=True)
def offline_with_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HF offline (HF_DATASETS_OFFLINE=1), and a fresh cache: nothing but the copy is read,
    and the user's HF cache gets no entries named after real data sets."""
    import datasets
    import huggingface_hub

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def prepared(task_name: str, data: dict[str, Any], out: Path) -> Any:
    cls = get_task(task_name)
    task = cls(make_data_config(cls, data))
    task.prepare(out)
    task.load(out)
    return task


def parquet_rows(folder: Path, pattern: str) -> list[dict[str, Any]]:
    return [row for f in sorted(folder.glob(pattern)) for row in pq.read_table(f).to_pylist()]


# ---------------------------------------------------------------------------------------
# Translation: WMT14, WMT16 (hub parquet), IWSLT 2017 (parquet conversion and release)
# ---------------------------------------------------------------------------------------
TRANSLATION = {"vocab_size": 300, "max_length": 64}


@pytest.mark.parametrize("name", sorted(WMT))
def test_wmt_en_de_from_the_hub_layout(name: str, tmp_path: Path) -> None:
    data = {"hf_path": str(WMT[name]), "hf_name": "de-en", "src_lang": "en", "tgt_lang": "de"}
    task = prepared("translation", data | TRANSLATION, tmp_path / "data")
    for ours, theirs in (("train", "train"), ("val", "validation"), ("test", "test")):
        rows = parquet_rows(WMT[name] / "de-en", f"{theirs}-*.parquet")
        assert [(p.source, p.reference) for p in task.splits[ours]] == [
            (r["translation"]["en"], r["translation"]["de"]) for r in rows
        ]  # English → German, in the hub's order (both train shards, in order)
    assert len(task.splits["train"]) == 40
    assert task.dataset_info().stand_in is False


def test_iwslt_parquet_conversion_and_official_release_give_the_same_data(
    tmp_path: Path,
) -> None:
    conversion = prepared(
        "translation",
        {
            "hf_path": str(IWSLT_CONVERSION),
            "hf_name": "iwslt2017-de-en",
            "hf_revision": "refs/convert/parquet",  # the config name becomes the data_dir
        }
        | TRANSLATION,
        tmp_path / "a",
    )
    explicit = prepared(
        "translation",
        {"hf_path": str(IWSLT_CONVERSION), "hf_name": None, "data_dir": "iwslt2017-de-en"}
        | TRANSLATION,
        tmp_path / "b",
    )
    release = prepared(
        "translation",
        {"hf_path": str(IWSLT_RELEASE), "data_dir": "de-en"} | TRANSLATION,  # De→En default
        tmp_path / "c",
    )
    for split in ("train", "val", "test"):
        pairs = [(p.source, p.reference) for p in conversion.splits[split]]
        assert pairs == [(p.source, p.reference) for p in explicit.splits[split]]
        assert pairs == [(p.source, p.reference) for p in release.splits[split]]
    for task in (conversion, release):
        assert json.loads((task.data_dir / "stats.json").read_text())["test"]["available"] == 12
        assert task.splits["val"][0].source.endswith("&amp; mehr.")  # entities kept, as on HF


def test_iwslt_release_is_read_as_the_hub_script_read_it() -> None:
    rows = parallel.read_iwslt_release(IWSLT_RELEASE / "de-en", "de-en")
    train_de = (IWSLT_RELEASE / "de-en" / "train.tags.de-en.de").read_text().splitlines()
    sentences = [line.strip() for line in train_de if not line.strip().startswith("<")]
    assert [r["translation"]["de"] for r in rows["train"]] == sentences  # tag lines skipped
    assert all(set(r["translation"]) == {"de", "en"} for r in rows["train"])
    assert len(rows["validation"]) == 4  # dev2010's <seg> lines
    assert len(rows["test"]) == 12  # tst2010 then tst2011 (the hub: tst2010 … tst2015)
    first = (IWSLT_RELEASE / "de-en" / "IWSLT17.TED.tst2010.de-en.de.xml").read_text()
    assert f'<seg id="1"> {rows["test"][0]["translation"]["de"]} </seg>' in first
    with pytest.raises(ValueError, match=r"no train.tags.en-fr.\* files; its pairs: de-en"):
        parallel.read_iwslt_release(IWSLT_RELEASE / "de-en", "en-fr")


def test_incomplete_iwslt_release_is_a_one_line_error(tmp_path: Path) -> None:
    folder = tmp_path / "de-en"
    folder.mkdir()
    for f in (IWSLT_RELEASE / "de-en").glob("train.tags.*"):
        (folder / f.name).write_text(f.read_text())
    with pytest.raises(hf.DataSourceError, match="lacks the dev2010 files of de-en") as err:
        hf.load_hf_dataset(str(folder))
    assert "\n" not in str(err.value)


def test_script_only_hub_datasets_are_read_from_the_parquet_conversion(monkeypatch) -> None:
    """The IWSLT default (`iwslt2017`, a loading script on the hub) asks datasets for the
    hub's parquet conversion; WMT (parquet on the hub's main branch) is asked as it is."""
    import datasets

    calls = []

    def fake(path, name=None, **kwargs):
        calls.append((path, name, kwargs["data_dir"], kwargs["revision"]))
        return datasets.DatasetDict()

    monkeypatch.setattr(datasets, "load_dataset", fake)
    hf.load_hf_dataset("iwslt2017", "iwslt2017-de-en")
    hf.load_hf_dataset("IWSLT/iwslt2017", "iwslt2017-en-de", revision="refs/convert/parquet")
    hf.load_hf_dataset("wmt14", "de-en")
    assert calls == [
        ("IWSLT/iwslt2017", None, "iwslt2017-de-en", "refs/convert/parquet"),
        ("IWSLT/iwslt2017", None, "iwslt2017-en-de", "refs/convert/parquet"),
        ("wmt14", "de-en", None, None),
    ]


# ---------------------------------------------------------------------------------------
# GLUE (nyu-mll/glue)
# ---------------------------------------------------------------------------------------
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


@pytest.mark.parametrize("name", GLUE_TASKS)
def test_glue_from_the_hub_layout(name: str, tmp_path: Path) -> None:
    task = prepared(name, {"hf_path": str(GLUE), "vocab_size": 300}, tmp_path / "data")
    # val = 10 % of train held out; test = the official validation split(s), labels shown;
    # the hub's test split (labels hidden, -1) is never read
    assert (len(task.splits["train"]), len(task.splits["val"])) == (36, 4)
    evals = ("validation_matched", "validation_mismatched") if name == "mnli" else ("validation",)
    ours = ("test", "test_mismatched")
    for split, theirs in zip(ours, evals, strict=False):
        rows = parquet_rows(GLUE / name, f"{theirs}-*.parquet")
        assert [label for _, label in task.splits[split]] == [r["label"] for r in rows]
    hidden = parquet_rows(GLUE / name, "test*-*.parquet")
    assert {r["label"] for r in hidden} == {-1}  # the fixture keeps GLUE's convention


def test_glue_hidden_test_labels_are_refused(tmp_path: Path) -> None:
    files = {
        "train": str(GLUE / "rte" / "train-00000-of-00001.parquet"),
        "validation": str(GLUE / "rte" / "test-00000-of-00001.parquet"),  # labels -1
    }
    with pytest.raises(ValueError, match="hidden") as err:
        prepared("rte", {"hf_path": "parquet", "data_files": files}, tmp_path / "x")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------
# WikiText, IMDb, CIFAR-10: through the tasks' public API only
# ---------------------------------------------------------------------------------------
def test_wikitext_from_the_hub_layout(tmp_path: Path) -> None:
    repo = HUB / "Salesforce" / "wikitext"
    data = {"hf_path": str(repo), "hf_name": "wikitext-2-raw-v1", "tokenizer": "char"}
    task = prepared("lm", data | {"window": 16, "stride": 8}, tmp_path / "data")
    info = task.dataset_info()
    assert info.name == "wikitext-2-raw-v1" and info.stand_in is False
    for split in ("train", "val", "test"):
        assert task.split_size(split) > 0


def test_imdb_from_the_hub_layout(tmp_path: Path) -> None:
    repo = HUB / "stanfordnlp" / "imdb"  # default config plain_text; unsupervised unused
    task = prepared("text", {"hf_path": str(repo), "max_length": 64}, tmp_path / "data")
    test = parquet_rows(repo / "plain_text", "test-*.parquet")
    assert [label for _, label in task.splits["test"]] == [r["label"] for r in test]
    assert 0 < task.split_size("train") <= 12 and task.split_size("val") > 0  # of train's 12
    labels = {label for split in ("train", "val") for _, label in task.splits[split]}
    assert labels == {0, 1}  # the unsupervised split (labels -1) is not read
    assert task.dataset_info().stand_in is False


def test_cifar10_from_the_hub_layout(tmp_path: Path) -> None:
    repo = HUB / "uoft-cs" / "cifar10"
    task = prepared("image", {"hf_path": str(repo)}, tmp_path / "data")
    # LRA's split: the first 90 % of train for training, the rest for validation
    sizes = {split: len(task.splits[split]) for split in ("train", "val", "test")}
    assert sizes == {"train": 18, "val": 2, "test": 10}
    labels = [r["label"] for r in parquet_rows(repo / "plain_text", "test-*.parquet")]
    assert [label for _, label in task.splits["test"]] == labels
