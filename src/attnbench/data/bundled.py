"""The offline corpora shipped with attnbench, checked against their recorded sha256.

The embedded default profile runs without the HuggingFace hub, so four small parquet
tables built from public Debian packages ship in ``attnbench/data/bundled/`` (what they
are and their licences: ``README.md`` there; how they were made:
``scripts/build_bundled_data.py``; facts: ``PROVENANCE.json``):

============== ==========================================================================
name           rows
============== ==========================================================================
bible          31,102 KJV verses with the World English Bible and Reina-Valera 1909
novels         paragraphs of ten public-domain novels (Austen, Melville, Wells, ...)
wordnet        117,659 WordNet 3.0 synsets (Miller, 1995) with their 45 lexnames
fashion_mnist  5,000 Fashion-MNIST images (Xiao et al., 2017), stratified subsample
============== ==========================================================================

A task reads one through :func:`bundled_path` (the file, verified) or
:func:`read_table` (a ``datasets.Dataset`` through the same ``load_hf_dataset`` door as
the real benchmarks). Verification hashes each file once per process: a truncated
checkout, a Git LFS pointer or an edited file fails with a one-line ``ValueError``
instead of training on something other than what the records claim.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["BUNDLED_DIR", "REBUILD_COMMAND", "bundled_path", "provenance", "read_table"]

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
REBUILD_COMMAND = "python scripts/build_bundled_data.py --download --source-dir SOURCE_DIR"


def provenance() -> dict[str, Any]:
    """The parsed ``PROVENANCE.json`` of :data:`BUNDLED_DIR` (packages, licences, sha256)."""
    return _provenance(BUNDLED_DIR)


@functools.cache
def _provenance(directory: Path) -> dict[str, Any]:
    path = directory / "PROVENANCE.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"bundled data: cannot read {path} ({type(exc).__name__}); "
            f"rebuild with `{REBUILD_COMMAND}`"
        ) from None


def bundled_path(name: str) -> Path:
    """The verified path of a bundled corpus, e.g. ``bundled_path("bible")``.

    ``name`` is a key of ``PROVENANCE.json`` ("bible", "novels", "wordnet",
    "fashion_mnist"; a trailing ".parquet" is accepted). The file's sha256 is checked
    against the recorded one the first time in a process. Raises ``ValueError`` (one
    line) for an unknown name, listing the valid ones, and for a missing or altered file,
    naming it and the rebuild command.
    """
    key = name.removesuffix(".parquet")
    files = provenance().get("files", {})
    if key not in files:
        raise ValueError(f"unknown bundled corpus {name!r}; valid: {', '.join(sorted(files))}")
    entry = files[key]
    path = BUNDLED_DIR / entry["file"]
    _verify(path, entry["sha256"])
    return path


@functools.cache
def _verify(path: Path, expected: str) -> None:
    # Cached on (path, expected): a monkeypatched BUNDLED_DIR is a different path.
    if not path.is_file():
        raise ValueError(f"bundled file {path} is missing; rebuild with `{REBUILD_COMMAND}`")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ValueError(
            f"bundled file {path} does not match its sha256 in PROVENANCE.json "
            f"(corrupt, a Git LFS pointer, or edited); rebuild with `{REBUILD_COMMAND}`"
        )


def read_table(
    name: str, path: str | Path | None = None, columns: Sequence[str] | None = None
) -> Any:
    """A parquet table through :func:`attnbench.data.hf.load_hf_dataset`: the bundled corpus
    ``name`` (verified, :func:`bundled_path`), or the file at ``path`` in its place.

    Without ``columns``: a ``datasets.Dataset`` (one split, all rows, in file order). With
    ``columns``: those columns as plain lists (fast to iterate); a missing one is a
    ``ValueError`` naming the columns the file has. A ``path`` that is no file is a
    ``FileNotFoundError``.
    """
    from attnbench.data.hf import load_hf_dataset

    if path is None:
        source = bundled_path(name)
    else:
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"data file not found: {source}")
    data = load_hf_dataset("parquet", data_files=str(source), split="train")
    if columns is None:
        return data
    missing = [c for c in columns if c not in data.column_names]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {', '.join(missing)}; "
            f"it has: {', '.join(data.column_names)}"
        )
    return data.select_columns(list(columns)).to_dict()
