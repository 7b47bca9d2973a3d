"""One door to HuggingFace ``datasets`` for every task, real benchmark or bundled file.

Real benchmarks come from the hub (``load_hf_dataset("wmt14", "de-en")``); the bundled
offline corpora are parquet files read by the same call
(``load_hf_dataset("parquet", data_files=...)``), so the code after loading is the same
for both and the tests exercise the real path on small local files.

``datasets`` ≥ 4 reads data files (parquet, JSON, CSV …) only: it refuses to run a hub
dataset's loading script. Hub datasets that consist of a script alone (IWSLT 2017) are
read from the hub's automatic parquet conversion instead: revision
``refs/convert/parquet``, where every configuration is a folder of that name holding
``<split>/0000.parquet`` (``data_dir`` selects the folder). :func:`resolve_source` does
that rewriting, for hub ids and for local copies of the conversion alike.

``path`` may also be a local folder: a copy of a hub repository (its ``README.md``
declares the configurations, as on the hub), a folder of split files, or a folder of
the official IWSLT 2017 release (``train.tags.<pair>.<lang>`` + ``IWSLT17.TED.*.xml``),
which :func:`attnbench.data.parallel.read_iwslt_release` reads into the hub's rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARQUET_CONVERSION = "refs/convert/parquet"  # the hub's automatic parquet export
# Hub datasets whose main branch holds only a loading script → the repository to read
# from the parquet conversion (the old short ids redirect to these repositories).
SCRIPT_ONLY = {"iwslt2017": "IWSLT/iwslt2017", "IWSLT/iwslt2017": "IWSLT/iwslt2017"}
# Builders that read local files named by ``data_files`` / ``data_dir`` (not hub ids).
FILE_BUILDERS = frozenset({"parquet", "json", "csv", "text", "arrow"})


class DataSourceError(ValueError):
    """A dataset cannot be loaded; the message is one line for the user."""


@dataclass(frozen=True)
class Source:
    """What :func:`load_hf_dataset` passes to ``datasets.load_dataset`` after rewriting."""

    path: str
    name: str | None = None
    data_dir: str | None = None
    data_files: Any = None
    revision: str | None = None

    @property
    def local(self) -> bool:
        """Read from local files (a file builder or a local folder), not from the hub."""
        return self.path in FILE_BUILDERS or Path(self.path).exists()

    def describe(self) -> str:
        what = self.path + (f"/{self.name}" if self.name else "")
        if self.data_dir:
            what += f" [{self.data_dir}]"
        if self.revision:
            what += f"@{self.revision}"
        return what


def resolve_source(
    path: str,
    name: str | None = None,
    *,
    data_dir: str | None = None,
    data_files: Any = None,
    revision: str | None = None,
) -> Source:
    """The call that reads ``path``/``name``: script-only hub datasets (:data:`SCRIPT_ONLY`)
    move to their parquet conversion, and on the conversion a configuration name becomes
    the ``data_dir`` it is stored under (the conversion has no configurations)."""
    if path in SCRIPT_ONLY and revision is None and data_dir is None and data_files is None:
        path, revision = SCRIPT_ONLY[path], PARQUET_CONVERSION
    if revision == PARQUET_CONVERSION and data_dir is None and name is not None:
        name, data_dir = None, name
    return Source(path, name, data_dir, data_files, revision)


def iwslt_release_dir(source: Source) -> Path | None:
    """The local folder of an official IWSLT release that ``source`` names, if it does."""
    from attnbench.data.parallel import iwslt_release_pairs

    if source.data_files is not None or source.path in FILE_BUILDERS:
        return None
    folder = Path(source.path) / (source.data_dir or "")
    return folder if folder.is_dir() and iwslt_release_pairs(folder) else None


def _release_pair(name: str | None) -> str | None:
    """``"iwslt2017-de-en"`` → ``"de-en"`` (the release's file names carry the pair)."""
    parts = (name or "").split("-")
    return "-".join(parts[-2:]) if len(parts) >= 2 else None


def _read_release(folder: Path, name: str | None, split: str | None) -> Any:
    import datasets

    from attnbench.data.parallel import read_iwslt_release

    rows = read_iwslt_release(folder, _release_pair(name))
    parts = {}
    for hf_split, split_rows in rows.items():
        languages = sorted(split_rows[0]["translation"]) if split_rows else []
        features = datasets.Features({"translation": datasets.Translation(languages=languages)})
        parts[hf_split] = datasets.Dataset.from_list(split_rows, features=features)
    if split is not None:
        if split not in parts:
            raise ValueError(f"no {split!r} split; it has {', '.join(parts)}")
        return parts[split]
    return datasets.DatasetDict(parts)


def load_hf_dataset(
    path: str,
    name: str | None = None,
    *,
    split: str | None = None,
    data_dir: str | None = None,
    data_files: Any = None,
    revision: str | None = None,
) -> Any:
    """``datasets.load_dataset`` with a one-line error when it fails (offline, missing files).

    ``data_dir`` (a folder inside the dataset), ``data_files`` (local files per split) and
    ``revision`` (a branch, tag or commit of a hub dataset) are passed on after
    :func:`resolve_source`; a local IWSLT release folder is read by
    :func:`attnbench.data.parallel.read_iwslt_release`.
    """
    import datasets

    datasets.disable_progress_bars()
    offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE")
    source = resolve_source(path, name, data_dir=data_dir, data_files=data_files, revision=revision)
    what = source.describe()
    try:
        release = iwslt_release_dir(source)
        if release is not None:
            return _read_release(release, source.name, split)
        return datasets.load_dataset(
            source.path,
            source.name,
            split=split,
            data_dir=source.data_dir,
            data_files=source.data_files,
            revision=source.revision,
        )
    except FileNotFoundError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataSourceError(f"cannot load dataset {what}: {first}") from None
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = (
            " (offline profile: HF_DATASETS_OFFLINE=1; download it once with network access "
            "into the HF cache, or use a bundled source)"
            if offline and not source.local
            else ""
        )
        raise DataSourceError(f"cannot load dataset {what}: {first}{hint}") from None
