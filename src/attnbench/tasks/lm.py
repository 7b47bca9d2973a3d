"""Language modelling: perplexity and bits per character of a causal decoder.

Benchmarks: WikiText-2 / WikiText-103 (Merity, Xiong, Bradbury & Socher 2017, "Pointer
Sentinel Mixture Models"), raw versions, read through HF ``datasets`` (``wikitext``,
``wikitext-{2,103}-raw-v1``: rows ``{"text": line}``, their own train/validation/test
splits). Offline, the default profile reads the bundled public-domain novels
(``novels.parquet``: author, title, position, text) and turns them into rows of the same
form, so everything after loading is one code path.

**Split of the novels** (deterministic, no seed): every book, in reading order
(``position``), is cut at paragraph boundaries into three *contiguous* parts holding
90 / 5 / 5 % of its characters (train / validation / test). Language modelling needs
contiguous text, and cutting each book (rather than holding whole books out, as WikiText
holds out whole articles) puts every author in every split: with about ten books, a
held-out book would make the test set one author's style. The price is that a test part
continues the story of its training part. Each book's part of a split starts with a
WikiText-style heading row ``" = <title> = \\n"``; each paragraph is a row ending in
``"\\n"``. A character cap of a split is shared equally by the books (each contributes
the first ``cap / books`` characters of its part), so a small test split still covers
every book.

**Tokenization** (``tokenizer``): ``char`` (vocabulary: the characters of the training
split; others map to ``[UNK]``), ``byte`` (UTF-8 bytes) or ``bpe``
(:class:`attnbench.text.SubwordTokenizer`, trained on the training split, saved in the
data directory). Ids 0–6 are the fixed specials of :mod:`attnbench.text` for all three,
and each split is one token stream ``[BOS] + tokens(text)``, the text being the rows
joined as they are (raw WikiText rows end in their newline already).

**Evaluation** scores every text token exactly once (the ``[BOS]`` is context only):

* *Sliding windows* (every variant without recurrence; the protocol of Baevski & Auli
  2019, "Adaptive Input Representations for Neural Language Modeling", and of the
  HuggingFace perplexity guide): windows of ``window`` = L tokens start every
  ``stride`` = S tokens; a window scores only the tokens earlier windows did not, so
  every token sees at least L − S earlier tokens except at the start of the split.
  All windows have length L (the last one is moved back to end at the split's end), so
  fixed-length variants need no padding.
* *Recurrence* (Transformer-XL; Dai et al. 2019, "Transformer-XL: Attentive Language
  Models Beyond a Fixed-Length Context"): the split is read as consecutive segments of
  L/2 tokens carrying the memory. Several parts of the split are read side by side
  (a batch); each part after the first is preceded by a warm-up of unscored tokens as
  long as the recurrent state's reach back into the text (:func:`memory_reach`), so every
  score equals the one a single pass over the whole split gives. The effective context
  goes into the record: at most segment + memory × layers tokens (Dai et al. §3.2).
  Training is recurrent too: each training window is read as two consecutive segments
  of L/2 tokens, the second with the (detached) memory of the first, so the model learns
  to use its memory at the same cost in tokens per step as every other variant.

Metrics: ``perplexity`` = exp(mean token NLL), ``nll`` (nats per token) and ``bpc`` =
total NLL in bits / characters of the scored text (comparable across tokenizations; for
``bpe``, characters before NFC normalisation).

**Word-level perplexity** (word-level sources: ``word_level``, by default true for
WikiText and false for the novels): ``word_perplexity`` = exp(total NLL of the split ÷
``n_words``), the number the WikiText literature reports whatever the model's tokens.
``n_words`` counts the words of WikiText's own tokenisation as Merity et al.'s and
Transformer-XL's data loaders do (:func:`count_words`): every row of the split (one line
of the WikiText file, blank lines included: HF gives them as ``""``) counts its
whitespace-separated tokens (``len(row.split())``) plus one end-of-line ``<eos>``. The
raw files hold the same whitespace tokens as the tokenised ones (which only replace rare
words by ``<unk>``), so over an uncapped split this should reproduce the token counts
of Merity et al.'s Table 1 (WikiText-2 and -103 share their articles of validation and
test: 217,646 and 245,569); under a character cap the last row is cut and still counts
its ``<eos>``. The NLL is that of the raw text as tokenised here, so ``word_perplexity``
is comparable across tokenizers and with published word-level numbers. For word-level
data it is the primary ``metric`` (and so picks the best checkpoint on the validation
split, as the per-token perplexity would: same NLL, another divisor); ``perplexity``
per token and ``bpc`` stay in the record.

The per-token NLLs of the test split are saved beside the record (``<stem>.nll.npy``,
float32 nats, token order) so the figures can be recomputed; predictions are sums over
blocks of ``stride`` tokens, the same blocks for every variant, for paired significance
tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.attention import Requirements, VariantSpec
from attnbench.data.bundled import read_table
from attnbench.data.hf import DataSourceError, load_hf_dataset
from attnbench.model import LanguageModel, ModelConfig, cross_entropy
from attnbench.ngram import kneser_ney_nll
from attnbench.records import atomic_write_bytes, atomic_write_text
from attnbench.tasks.base import (
    Batch,
    DatasetInfo,
    EmptySplitError,
    Evaluation,
    Task,
    TaskSetup,
    npy_bytes,
    register_task,
    with_aux,
)
from attnbench.text import (
    BOS,
    PAD,
    SPECIALS,
    UNK,
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    SubwordTokenizer,
    Tokenizer,
)

SOURCES = ("wikitext", "novels")
# Whether a source's text is word-level, i.e. published whitespace-tokenised with word-level
# perplexities (the default of ``LMData.word_level``; the primary metric follows it).
WORD_LEVEL_SOURCES = {"wikitext": True, "novels": False}
TOKENIZERS = ("char", "byte", "bpe")
SPLITS = ("train", "val", "test")
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}  # ours -> WikiText's
NOVEL_PARTS = (0.90, 0.95)  # cumulative character shares where a book's val and test begin
META_FILE = "lm.json"
IGNORE = -100  # target id that the loss skips (padding)


@dataclass
class LMData:
    """Data knobs (``tasks.lm.data`` in a profile); defaults are WikiText-103 with BPE."""

    source: str = "wikitext"  # "wikitext" (HF datasets) | "novels" (bundled novels.parquet)
    hf_path: str = "Salesforce/wikitext"  # hub id ("wikitext" redirects); "json"/"parquet"
    # with data_files for a local copy in WikiText's format
    hf_name: str | None = "wikitext-103-raw-v1"  # or "wikitext-2-raw-v1"
    data_files: dict[str, Any] | None = None  # local copy: {train, validation, test: file(s)}
    path: str | None = None  # novels: a parquet file of the same columns (None: the bundled one)
    tokenizer: str = "bpe"  # "char" | "byte" | "bpe"
    vocab_size: int = 32_000  # bpe only: vocabulary size, specials included
    window: int = 512  # L: tokens per model input (the model's max_len)
    stride: int = 256  # S ≤ L: evaluation windows start every S tokens (context ≥ L − S)
    max_train_chars: int | None = None  # caps (characters per split); None: the whole split
    max_val_chars: int | None = None
    max_test_chars: int | None = None
    # Word-level text (whitespace-tokenised, as WikiText): report perplexity per word and make
    # it the primary metric. None: the source's convention (WikiText true, novels false).
    word_level: bool | None = None

    def __post_init__(self) -> None:
        where = "tasks.lm.data"
        if self.source not in SOURCES:
            raise ValueError(f"{where}.source={self.source!r}; valid choices: {', '.join(SOURCES)}")
        if self.word_level is None:
            self.word_level = WORD_LEVEL_SOURCES[self.source]
        if not isinstance(self.word_level, bool):
            raise ValueError(
                f"{where}.word_level must be true, false or null, got {self.word_level!r}"
            )
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(
                f"{where}.tokenizer={self.tokenizer!r}; valid choices: {', '.join(TOKENIZERS)}"
            )
        if self.tokenizer == "bpe" and self.vocab_size <= len(SPECIALS) + 256:
            raise ValueError(
                f"{where}.vocab_size must exceed {len(SPECIALS) + 256} for bpe, "
                f"got {self.vocab_size}"
            )
        if self.window < 2:
            raise ValueError(f"{where}.window must be at least 2, got {self.window}")
        if not 1 <= self.stride <= self.window:
            raise ValueError(
                f"{where}.stride must be in [1, window={self.window}], got {self.stride}"
            )
        for name in ("max_train_chars", "max_val_chars", "max_test_chars"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{where}.{name} must be positive or null, got {value}")
        expected = set(HF_SPLITS.values())
        if self.data_files is not None and (
            not isinstance(self.data_files, dict) or set(self.data_files) != expected
        ):
            raise ValueError(
                f"{where}.data_files must map exactly train, validation, test to files, "
                f"got {self.data_files!r}"
            )

    def cap(self, split: str) -> int | None:
        """Character cap of a split ("train", "val" or "test")."""
        caps = {"train": self.max_train_chars, "val": self.max_val_chars}
        return {**caps, "test": self.max_test_chars}[split]


# ---------------------------------------------------------------------------------------
# Tokenizers: char, byte or bpe (attnbench.text); specials first in every one
# ---------------------------------------------------------------------------------------
def load_tokenizer(data_dir: Path) -> Tokenizer:
    """The tokenizer a prepared data directory was made with."""
    meta = json.loads((Path(data_dir) / META_FILE).read_text())
    kind = meta["tokenizer"]
    if kind == "char":
        return CharTokenizer(json.loads((Path(data_dir) / "vocab.json").read_text())["symbols"])
    if kind == "byte":
        return ByteTokenizer()
    return BPETokenizer(SubwordTokenizer.load(Path(data_dir) / "tokenizer.json"))


# ---------------------------------------------------------------------------------------
# Reading the sources into rows of text, one list per split
# ---------------------------------------------------------------------------------------
def take_chars(rows: Sequence[str], limit: int | None) -> list[str]:
    """The first ``limit`` characters of ``"".join(rows)``, still as rows (last one cut)."""
    if limit is None:
        return list(rows)
    out, total = [], 0
    for row in rows:
        if total >= limit:
            break
        out.append(row[: limit - total])
        total += len(out[-1])
    return out


def novel_rows(table: Any, caps: dict[str, int | None]) -> dict[str, list[str]]:
    """Rows per split from a novels table (columns author, title, position, text).

    Books in order of first appearance, paragraphs by ``position``; see the module
    docstring for the 90/5/5 cut and how caps are shared between books.
    """
    books: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for author, title, position, text in zip(
        table["author"], table["title"], table["position"], table["text"], strict=True
    ):
        books.setdefault((author, title), []).append((int(position), text or ""))
    if not books:
        raise DataSourceError("the novels table has no rows")
    out: dict[str, list[str]] = {split: [] for split in SPLITS}
    for (_, title), paragraphs in books.items():
        paragraphs.sort()
        rows = [text + "\n" for _, text in paragraphs]
        total = sum(len(r) for r in rows)
        cuts = [c * total for c in NOVEL_PARTS]
        parts: dict[str, list[str]] = {split: [] for split in SPLITS}
        seen = 0
        for row in rows:  # a paragraph goes to the part its first character falls in
            split = "train" if seen < cuts[0] else "val" if seen < cuts[1] else "test"
            parts[split].append(row)
            seen += len(row)
        for split in SPLITS:
            cap = caps[split]
            share = None if cap is None else cap // len(books)
            out[split] += take_chars([f" = {title} = \n", *parts[split]], share)
    return out


def count_words(rows: Sequence[str]) -> int:
    """Words of WikiText's tokenisation in ``rows``: per row, whitespace tokens + one <eos>.

    A row is one line of the source file (blank lines, ``""`` in HF's WikiText, count their
    ``<eos>`` too), as Merity et al.'s and Transformer-XL's loaders count
    (``line.split() + ["<eos>"]``).
    """
    return sum(len(row.split()) + 1 for row in rows)


def wikitext_rows(dataset: Any, caps: dict[str, int | None]) -> dict[str, list[str]]:
    """Rows per split from a WikiText-format DatasetDict (train/validation/test, "text")."""
    missing = [s for s in HF_SPLITS.values() if s not in dataset]
    if missing:
        raise DataSourceError(
            f"dataset has no {', '.join(missing)} split; it has {', '.join(dataset)}"
        )
    return {split: take_chars(dataset[HF_SPLITS[split]]["text"], caps[split]) for split in SPLITS}


# ---------------------------------------------------------------------------------------
# Evaluation plans (pure index bookkeeping, tested on its own)
# ---------------------------------------------------------------------------------------
def sliding_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows ``(start, length, skip)`` that score tokens 1 … n_tokens − 1 exactly once.

    A window feeds ``ids[start : start + length]`` and predicts
    ``ids[start + 1 : start + length + 1]``; its first ``skip`` predictions were made by
    an earlier window, so it scores positions ``start + skip + 1 … start + length``, each
    with at least ``window − stride`` earlier tokens in view (fewer only at the start).
    Every window has length ``window`` when the stream has more than ``window`` tokens.
    """
    n_targets = n_tokens - 1
    if n_targets <= 0:
        return []
    if n_targets <= window:
        return [(0, n_targets, 0)]
    plan, done, start = [], 0, 0  # done: targets 1 … done are scored
    while done < n_targets:
        end = min(start + window, n_targets)
        start = end - window
        plan.append((start, window, done - start))
        done = end
        start += stride
    return plan


@dataclass(frozen=True)
class RecurrentPlan:
    """Rows read side by side, segment by segment, by a recurrent model.

    Row b reads input positions ``starts[b] + j·segment + (0 … segment − 1)`` at step j
    (j < n_segments) and scores the predictions of positions ≥ ``first[b]`` (position i
    predicts token i + 1); positions ≥ n_inputs are padding.
    """

    segment: int
    n_segments: int
    starts: list[int] = field(default_factory=list)
    first: list[int] = field(default_factory=list)


def recurrent_plan(n_inputs: int, segment: int, warmup: int, max_rows: int) -> RecurrentPlan:
    """Split ``n_inputs`` predictions into rows; rows after the first warm up first.

    ``warmup`` (a multiple of ``segment``) unscored positions precede every row but the
    first, and all row starts are multiples of ``segment``, so each row reads the same
    segments as one pass over the whole stream would. Rows are limited so that warm-up
    costs at most about half of the work.
    """
    if warmup % segment:
        raise ValueError(f"warm-up {warmup} must be a multiple of the segment {segment}")
    rows = max(1, min(max_rows, n_inputs // (2 * (warmup + segment))))
    per_row = -(-(n_inputs + (rows - 1) * warmup) // (rows * segment))  # segments, ceil
    span = per_row * segment
    starts = [0] + [b * (span - warmup) for b in range(1, rows)]
    first = [0] + [s + warmup for s in starts[1:]]
    return RecurrentPlan(segment, per_row, starts, first)


def memory_reach(memory: int, segment: int, n_layers: int) -> int:
    """How many tokens before a segment start the recurrent state depends on.

    Layer l keeps its inputs at the last ``memory`` positions; layer l's input at
    position p (l ≥ 1) was computed by layer l − 1 from its inputs at p's segment and
    the ``memory`` positions before that segment. Going down from the top layer's
    memory, x = −memory, then (layers − 1) times x = segment_start(x) − memory.
    """
    if memory <= 0:
        return 0
    x = -memory
    for _ in range(n_layers - 1):
        x = (x // segment) * segment - memory
    return -x


def block_predictions(nll: np.ndarray, block: int) -> list[dict[str, Any]]:
    """Per-block NLL sums over consecutive ``block`` tokens (same blocks for every variant)."""
    return [
        {
            "index": k,
            "first_token": k * block + 1,  # stream position of the block's first token
            "tokens": int(min(block, len(nll) - k * block)),
            "nll_sum": float(nll[k * block : (k + 1) * block].astype(np.float64).sum()),
        }
        for k in range(-(-len(nll) // block))
    ]


def nll_metrics(nll: np.ndarray, n_chars: int, n_words: int | None = None) -> dict[str, float]:
    """Perplexity, mean NLL (nats/token) and bits per character from per-token NLLs.

    With ``n_words`` also ``word_perplexity`` = exp(total NLL / n_words) and ``n_words``.
    """
    total = float(nll.astype(np.float64).sum())
    mean = total / max(len(nll), 1)
    metrics = {
        "perplexity": math.exp(mean),
        "nll": mean,
        "bpc": total / math.log(2) / max(n_chars, 1),
        "tokens": float(len(nll)),
        "characters": float(n_chars),
    }
    if n_words is not None:
        metrics["word_perplexity"] = math.exp(total / max(n_words, 1))
        metrics["n_words"] = float(n_words)
    return metrics


# ---------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------
@register_task
class LanguageModelling(Task):
    """Causal language modelling: perplexity (lower is better), bits per character.

    The primary metric is ``perplexity`` (per token), or ``word_perplexity`` where the data
    are word-level (``LMData.word_level``; WikiText by default).
    """

    # WikiText (Merity et al. 2017; HF Salesforce/wikitext): rows (lines) per split
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {
        "wikitext/wikitext-103-raw-v1": {"train": 1_801_350, "validation": 3_760, "test": 4_358},
        "wikitext/wikitext-103-v1": {"train": 1_801_350, "validation": 3_760, "test": 4_358},
        "wikitext/wikitext-2-raw-v1": {"train": 36_718, "validation": 3_760, "test": 4_358},
        "wikitext/wikitext-2-v1": {"train": 36_718, "validation": 3_760, "test": 4_358},
    }

    name = "lm"
    family = "lm"
    metric = "perplexity"  # per instance: "word_perplexity" for word-level data
    higher_is_better = False
    head = "lm"
    DataConfig = LMData
    data_version = 2  # 2: lm.json counts each split's words

    def __init__(self, data_cfg: LMData, setup: TaskSetup | None = None) -> None:
        super().__init__(data_cfg, setup)
        self.meta: dict[str, Any] = {}
        self.metric = "word_perplexity" if data_cfg.word_level else "perplexity"

    @property
    def recurrent(self) -> bool:
        """Whether the variant reads text segment by segment with a memory (setup)."""
        return self.setup.memory_len > 0

    # -- description ------------------------------------------------------------------
    def requirements(self) -> Requirements:
        # Fixed windows: no padding, and fixed-length variants run as they are.
        return Requirements(causal=True, padding_mask=False, max_len=self.max_len())

    def max_len(self) -> int:
        return self.cfg.window

    @property
    def segment_len(self) -> int:
        """Segment length of recurrent variants: half a window (two per training window)."""
        return max(self.cfg.window // 2, 1)

    def dataset_info(self) -> DatasetInfo:
        c = self.cfg
        caps = "/".join(
            "all" if c.cap(s) is None else f"{c.cap(s):,}" for s in SPLITS
        )  # characters
        tok = c.tokenizer + (f" (vocabulary {c.vocab_size:,})" if c.tokenizer == "bpe" else "")
        if c.word_level:
            tok += "; perplexity per word (whitespace tokens + <eos> per line)"
        if c.source == "novels":
            table = "bundled novels.parquet" if c.path is None else f"novels table {c.path}"
            return DatasetInfo(
                "novels-en",
                "bundled",
                True,
                f"public-domain English novels ({table}), each book cut 90/5/5 by position; "
                f"{tok} tokens; characters per split (train/val/test): {caps}",
            )
        if c.data_files is not None:
            where = f"local {c.hf_path} files in the WikiText format"
        else:
            where = f"HF {c.hf_path}/{c.hf_name}"
        return DatasetInfo(
            c.hf_name or c.hf_path,
            "huggingface",
            False,
            f"{where}; {tok} tokens; characters per split (train/val/test): {caps}",
        )

    # -- data -----------------------------------------------------------------------------
    def read_rows(self) -> dict[str, list[str]]:
        """Rows of text per split from the configured source (capped)."""
        c = self.cfg
        caps = {split: c.cap(split) for split in SPLITS}
        if c.source == "novels":
            table = read_table("novels", c.path)
            return novel_rows(table.to_dict(), caps)
        dataset = load_hf_dataset(c.hf_path, c.hf_name, data_files=c.data_files)
        return wikitext_rows(dataset, caps)

    def prepare(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        rows = self.read_rows()
        texts = {split: "".join(rows[split]) for split in SPLITS}
        tokenizer: Tokenizer
        if self.cfg.tokenizer == "char":
            tokenizer = CharTokenizer.train([texts["train"]])
            tokenizer.save(out_dir / "vocab.json")
        elif self.cfg.tokenizer == "byte":
            tokenizer = ByteTokenizer()
        else:
            tokenizer = BPETokenizer(SubwordTokenizer.train(rows["train"], self.cfg.vocab_size))
            tokenizer.tok.save(out_dir / "tokenizer.json")
        splits = {}
        for split in SPLITS:
            dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.int32
            if isinstance(tokenizer, BPETokenizer):
                ids = tokenizer.encode_rows(rows[split]).astype(dtype)
            else:  # in slices: WikiText-103 is 540M characters
                text, step = texts[split], 1 << 24
                parts = [
                    tokenizer.encode(text[i : i + step]).astype(dtype)
                    for i in range(0, len(text), step)
                ]
                ids = np.concatenate(parts) if parts else np.zeros(0, dtype)
            stream = np.concatenate([np.array([BOS], dtype), ids])
            buffer = npy_bytes(stream)
            atomic_write_bytes(out_dir / f"{split}.npy", buffer)
            splits[split] = {
                "tokens": len(ids),
                "characters": len(texts[split]),
                "words": count_words(rows[split]),  # see count_words
                "unknown": int((ids == UNK).sum()),
            }
        meta = {
            "tokenizer": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "stream": "[BOS] + tokens(text); every text token is scored",
            "words": "per row (line): whitespace-separated tokens + 1 <eos>",
            "splits": splits,
        }
        atomic_write_text(out_dir / META_FILE, json.dumps(meta, indent=2) + "\n")

    def load(self, data_dir: Path) -> None:
        data_dir = Path(data_dir)
        self.meta = json.loads((data_dir / META_FILE).read_text())
        if self.meta["tokenizer"] != self.cfg.tokenizer:
            raise ValueError(
                f"data in {data_dir} is tokenized as {self.meta['tokenizer']!r}, "
                f"the profile asks for {self.cfg.tokenizer!r}; prepare it again"
            )
        if any("words" not in self.meta["splits"][s] for s in SPLITS):
            raise ValueError(
                f"data in {data_dir} has no word counts (older code); prepare it again"
            )
        for split in SPLITS:
            self.splits[split] = np.load(data_dir / f"{split}.npy").astype(np.int64)

    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def split_size(self, split: str) -> int:
        return max(len(self.splits[split]) - 1, 0)  # scored tokens

    def batches(
        self, split: str, batch_size: int, *, shuffle: bool = False, epoch: int = 0, seed: int = 0
    ) -> Iterator[Batch]:
        """Windows of ``window`` inputs and their next tokens, tiled without overlap.

        Shuffled (training), the tiling starts at a random offset below ``window`` and
        the windows come in a random order, both drawn from (seed, epoch) alone.
        """
        ids = self.splits[split]
        if len(ids) < 2:
            raise EmptySplitError(f"task {self.name!r}: split {split!r} is empty")
        length = min(self.cfg.window, len(ids) - 1)
        offset = 0
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        if shuffle:
            offset = int(torch.randint(0, self.cfg.window, (1,), generator=gen))
        n_windows = (len(ids) - 1 - offset) // length
        if n_windows == 0:
            offset, n_windows = 0, 1
        order = torch.randperm(n_windows, generator=gen) if shuffle else torch.arange(n_windows)
        starts_all = offset + order * length
        steps = torch.arange(length)
        source = torch.from_numpy(ids)
        for b in range(0, n_windows, batch_size):
            starts = starts_all[b : b + batch_size]
            pos = starts[:, None] + steps  # (B, T)
            inputs, targets = source[pos], source[pos + 1]
            batch_inputs = {"ids": inputs}
            width = self.setup.pad_to or length
            if width > length:  # fixed-length variants on a split shorter than one window
                pad = width - length
                inputs = F.pad(inputs, (0, pad), value=PAD)
                targets = F.pad(targets, (0, pad), value=IGNORE)
                padding = torch.zeros_like(inputs, dtype=torch.bool)
                padding[:, :length] = True
                batch_inputs = {"ids": inputs, "key_padding": padding}
            yield Batch(batch_inputs, targets, len(starts) * length, starts)

    # -- model ----------------------------------------------------------------------------
    def build_model(
        self, cfg: ModelConfig, variant: VariantSpec, options: dict[str, Any]
    ) -> nn.Module:
        return LanguageModel(self.vocab_size(), cfg, variant, options)

    def _forward(self, model: nn.Module, ids: Tensor, state: Any = None, **kwargs: Any) -> Any:
        """``model(ids)`` with right padding to ``setup.pad_to`` for fixed-length variants."""
        length, pad_to = ids.shape[1], self.setup.pad_to
        if pad_to is not None and length < pad_to:
            padded = F.pad(ids, (0, pad_to - length), value=PAD)
            padding = torch.zeros_like(padded, dtype=torch.bool)
            padding[:, :length] = True
            out = model(padded, padding, state=state, **kwargs)
            out.logits = out.logits[:, :length]
            return out
        return model(ids, state=state, **kwargs)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor | None]:
        if not self.recurrent:
            out = model(**batch.inputs)
            return with_aux(cross_entropy(out.logits, batch.targets, IGNORE), out.aux_loss)
        # Two consecutive segments; the second reads the first's detached memory.
        ids, half = batch.inputs["ids"], self.segment_len
        first = self._forward(model, ids[:, :half])
        second = self._forward(model, ids[:, half:], state=first.state)
        logits = torch.cat([first.logits, second.logits], dim=1)
        loss = cross_entropy(logits, batch.targets, IGNORE)
        aux = [o.aux_loss for o in (first, second) if o.aux_loss is not None]
        return with_aux(loss, sum(aux) / len(aux) if aux else None)

    # -- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        split: str,
        batch_size: int,
        device: torch.device,
        **model_kwargs: Any,
    ) -> Evaluation:
        """Perplexity and bits per character (word-level data: also ``word_perplexity`` and
        ``n_words``); ``extra["token_nll"]``: every token's NLL (nats, float32, text order),
        ``info``: how the split was read (window or segments)."""
        ids = self.splits[split]
        if len(ids) < 2:
            raise EmptySplitError(f"task {self.name!r}: split {split!r} is empty")
        if self.recurrent:
            nll, info = self._recurrent_nll(model, ids, batch_size, device, model_kwargs)
        else:
            nll, info = self._window_nll(model, ids, batch_size, device, model_kwargs)
        counts = self.meta["splits"][split]
        words = int(counts["words"]) if self.cfg.word_level else None
        metrics = nll_metrics(nll, int(counts["characters"]), words)
        metrics["loss"] = metrics["nll"]  # the mean token NLL, every task's "loss"
        return Evaluation(
            metrics,
            block_predictions(nll, self.cfg.stride),
            extra={"token_nll": nll},
            info=info,
        )

    def _window_nll(
        self, model: nn.Module, ids: np.ndarray, batch_size: int, device: torch.device, kwargs
    ) -> tuple[np.ndarray, dict[str, Any]]:
        c = self.cfg
        plan = sliding_windows(len(ids), c.window, c.stride)
        nll = np.full(len(ids) - 1, np.nan, dtype=np.float32)
        source = torch.from_numpy(ids)
        for b in range(0, len(plan), batch_size):
            chunk = plan[b : b + batch_size]
            length = chunk[0][1]  # all windows have one length (see sliding_windows)
            pos = torch.tensor([s for s, _, _ in chunk])[:, None] + torch.arange(length)
            x, y = source[pos].to(device), source[pos + 1].to(device)
            logits = self._forward(model, x, **kwargs).logits.float()
            token_nll = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").cpu()
            for row, (start, n, skip) in enumerate(chunk):
                nll[start + skip : start + n] = token_nll[row, skip:n].numpy()
        info = {
            "mode": "sliding-window",
            "window": c.window,
            "stride": c.stride,
            "context_min": c.window - c.stride + 1,  # tokens in view, except at the start
            "context_max": c.window,
        }
        return nll, info

    def warmup_len(self) -> int:
        """Unscored tokens before each row of recurrent evaluation: the reach, in segments."""
        seg = self.segment_len
        reach = memory_reach(self.setup.memory_len, seg, self.setup.n_layers)
        return -(-reach // seg) * seg

    def _recurrent_nll(
        self, model: nn.Module, ids: np.ndarray, batch_size: int, device: torch.device, kwargs
    ) -> tuple[np.ndarray, dict[str, Any]]:
        seg = self.segment_len
        warmup = self.warmup_len()
        n = len(ids) - 1
        plan = recurrent_plan(n, seg, warmup, batch_size)
        nll = np.full(n, np.nan, dtype=np.float32)
        source = torch.from_numpy(ids)
        starts = torch.tensor(plan.starts)[:, None]
        first = torch.tensor(plan.first)[:, None]
        state, used_memory = None, 0
        for j in range(plan.n_segments):
            pos = starts + j * seg + torch.arange(seg)  # (rows, seg) input positions
            valid = pos < n
            safe = pos.clamp(max=n - 1)
            x = torch.where(valid, source[safe], PAD).to(device)
            y = torch.where(valid, source[safe + 1], 0).to(device)
            out = self._forward(model, x, state=state, **kwargs)
            if out.state is not None:
                used_memory = max(used_memory, *(s.shape[1] for s in out.state))
            state = out.state
            token_nll = F.cross_entropy(out.logits.float().transpose(1, 2), y, reduction="none")
            scored = valid & (pos >= first)
            nll[pos[scored].numpy()] = token_nll.cpu()[scored].numpy()
        memory_len, n_layers = self.setup.memory_len, self.setup.n_layers
        info = {
            "mode": "recurrent",
            "segment": seg,
            "memory_len": memory_len,
            "memory_used": used_memory,  # longest memory a layer held during evaluation
            "n_layers": n_layers,
            "attention_span": seg + used_memory,  # keys per query at most, per layer
            "context_min": used_memory + 1,  # in view directly, except at the start
            "context_max_theoretical": seg + memory_len * n_layers,
            "rows": len(plan.starts),
            "warmup_tokens": warmup,
        }
        return nll, info

    # -- baselines, analysis, record ----------------------------------------------------------
    def _unigram_nll(self) -> np.ndarray:
        """Test NLLs under add-one-smoothed train-split token frequencies."""
        train = self.splits["train"][1:]
        counts = np.bincount(train, minlength=self.vocab_size()).astype(np.float64) + 1.0
        logp = np.log(counts / counts.sum())
        return (-logp[self.splits["test"][1:]]).astype(np.float32)

    def baselines(self) -> dict[str, float]:
        """Test perplexity (the primary metric's: per word for word-level data) of n-gram
        models fit on the training stream.

        ``uniform`` (every token 1/V), ``unigram`` (add-one smoothed frequencies) and the
        interpolated Kneser–Ney ``kn_bigram`` and ``kn_trigram``
        (:func:`attnbench.ngram.kneser_ney_nll`), on exactly the tokens the model is
        scored on: every test token after the split's [BOS], which is context only.
        """
        test = self.splits.get("test", [])
        if len(test) < 2:
            return {}
        words = int(self.meta["splits"]["test"]["words"]) if self.cfg.word_level else None

        def score(nll: np.ndarray) -> float:
            return nll_metrics(nll, 1, words)[self.metric]

        v = self.vocab_size()
        uniform = float(v) if words is None else math.exp((len(test) - 1) * math.log(v) / words)
        result = {"unigram": score(self._unigram_nll()), "uniform": uniform}
        if len(self.splits.get("train", [])) >= 2:
            for order, name in ((2, "kn_bigram"), (3, "kn_trigram")):
                result[name] = score(kneser_ney_nll(self.splits["train"], test, order, v))
        return result

    def analysis_batch(self, size: int = 32) -> Batch | None:
        return next(self.batches("val", size))

    def record_info(self, evaluation: Evaluation | None = None) -> dict[str, Any]:
        c = self.cfg
        info: dict[str, Any] = {
            "tokenizer": c.tokenizer,
            "window": c.window,
            "stride": c.stride,
            "word_level": c.word_level,
            "nll_file": "per-token NLL of the test split, nats, float32, in text order",
        }
        if c.word_level:
            info["words"] = (
                "word_perplexity = exp(total NLL / n_words); n_words = per line of the source "
                "(blank lines included), whitespace-separated tokens + 1 <eos>"
            )
        if self.meta:
            test = self.meta["splits"]["test"]
            v = self.vocab_size()
            info |= {
                "vocab_size": v,
                "splits": self.meta["splits"],
                "baseline_bpc": {
                    "uniform": test["tokens"] * math.log2(v) / max(test["characters"], 1),
                    "unigram": float(self._unigram_nll().astype(np.float64).sum())
                    / math.log(2)
                    / max(test["characters"], 1),
                },
            }
        if self.recurrent:
            info["training"] = (
                f"each window read as two consecutive segments of {self.segment_len} tokens, "
                "the second with the detached memory of the first"
            )
        return info | super().record_info(evaluation)

    def write_artifacts(self, stem: Path, evaluation: Evaluation) -> dict[str, str]:
        """The test split's per-token NLLs as ``<stem>.nll.npy``."""
        path = stem.with_name(stem.name + ".nll.npy")
        atomic_write_bytes(path, npy_bytes(evaluation.extra["token_nll"]))
        return {"token_nll": path.name}
