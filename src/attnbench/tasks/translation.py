"""Machine translation with an encoder–decoder Transformer, scored by BLEU and chrF.

Model (Vaswani et al. 2017, "Attention Is All You Need"): :class:`attnbench.model.EncoderDecoder`
with one shared subword vocabulary (tied embeddings). The variant replaces the
self-attention of the encoder and of the decoder (causal there); cross-attention uses
the variant when it declares cross-attention support (``capabilities.cross_attention``),
otherwise the profile's reference variant (``reference.variant``, by default ``vanilla``;
:class:`attnbench.tasks.base.TaskSetup`) — ``task_info.cross_attention`` in the record
says which. Variants that cannot mask the future (the decoder needs it) get an ``n/a``
record. Fixed-length variants (``variable_length=False``) get both the source and the
decoder input right-padded to ``max_len`` with key padding masks, in training and in
decoding. Variants that encode positions themselves (TUPE, Transformer-XL) get no
absolute positions from the model; Transformer-XL runs without segment memory, every
sentence being one segment (``ctx.state`` is None), i.e. as relative-position attention.

Data (``tasks.translation.data``; the defaults are the IWSLT 2017 De→En protocol):

- ``source: huggingface`` — a parallel corpus through HF ``datasets`` in the hub's
  translation schema, rows ``{"translation": {"de": ..., "en": ...}}`` with splits
  train/validation/test (:func:`attnbench.data.hf.load_hf_dataset`):

  * IWSLT 2017 De–En (Cettolo et al. 2017, "Overview of the IWSLT 2017 Evaluation
    Campaign"; the defaults, ``hf_path: iwslt2017``, ``hf_name: iwslt2017-de-en``):
    validation = dev2010 (888 pairs), test = tst2010–tst2015 (8,079). The hub dataset
    is a loading script, which ``datasets`` ≥ 4 refuses, so it is read from the hub's
    parquet conversion (``hf_revision: refs/convert/parquet``, the configuration's
    folder as ``data_dir``; done automatically). A local copy of that conversion is
    read with ``hf_path: <folder>``, ``data_dir: iwslt2017-de-en``; a local copy of the
    official release (``train.tags.de-en.de`` / ``.en``, ``IWSLT17.TED.dev2010.de-en.*.xml``,
    ``IWSLT17.TED.tst201?.de-en.*.xml``) with ``hf_path: <folder>`` (and ``data_dir``
    if the files are in a subfolder): it is read as the hub's script read it.
  * WMT14 En→De (Bojar et al. 2014, "Findings of the 2014 Workshop on Statistical
    Machine Translation"; ``hf_path: wmt14``, ``hf_name: de-en``, ``src_lang: en``,
    ``tgt_lang: de``): 4.5M training pairs, validation = newstest2013 (3,000), test =
    newstest2014 (3,003 sentences, sacrebleu's ``wmt14/full``) — the setting of
    Vaswani et al. 2017 (``config/wmt14.yaml``).
  * WMT16 En→De (Bojar et al. 2016, "Findings of the 2016 Conference on Machine
    Translation"; ``hf_path: wmt16``): validation = newstest2015 (2,169), test =
    newstest2016 (2,999) — not the test set of the Transformer papers.

  ``hf_path`` may be a local folder laid out as the hub repository (its ``README.md``
  names the configurations), or ``json`` / ``parquet`` with ``data_files`` (or
  ``data_dir``) for local files in the same schema.
- ``source: bundled`` — the offline stand-in: King James Bible verses (English) paired
  with the Reina-Valera 1909 (Spanish) verse of the same reference (``bible.parquet``,
  rows where both are present). The bible table is converted into the hub's translation
  rows, written as JSON Lines in the data directory and read back through the same
  ``load_hf_dataset("json", data_files=...)`` call and conversion code as the hub path.
  The split is **by chapter**: a chapter goes to test if the first 4 bytes of
  SHA-256("<book>.<chapter>") mod 1000 are < 50, to validation if < 100, else to train
  (≈ 5 % / 5 % / 90 % of the 1,189 chapters), so neighbouring verses, which share names
  and phrasing, never straddle splits.

Both paths then: normalise whitespace (any run of whitespace, newlines included,
becomes one space, so every sentence is one line of the saved text files); with
``max_words`` keep only pairs of at most that many words per side in every split (a
definition of the data set, made before tokenization; the offline default profile uses
it to keep verses short enough for its small budget); cap each
split at ``n_train`` / ``n_val`` / ``n_test`` pairs chosen by a stable hash of the
pair's position (a deterministic sample spread over the split, kept in corpus order);
train a byte-level BPE (:class:`attnbench.text.SubwordTokenizer`, one vocabulary for
both languages) on the capped training pairs; drop **training** pairs longer than
``max_length`` subwords on either side. Validation and test pairs are never dropped
(that would make the test set depend on the tokenizer): their source is truncated to
``max_length`` subwords for the model and their reference stays whole for BLEU, so an
over-long sentence costs score honestly; the teacher-forced loss uses the reference
truncated the same way. ``stats.json`` in the data directory counts all of this.

Sequences: source ``x_1 … x_n [EOS]``, decoder input ``[BOS] y_1 … y_m``, target
``y_1 … y_m [EOS]``; so ``max_len = max_length + 1``. Training batches are drawn with
length bucketing (sorted within windows of 50 batches, then shuffled), which cuts the
padding, and so the cost, of a step. With ``max_tokens`` a training batch is instead a
number of tokens, as in Vaswani et al. 2017 (≈ 25,000 source + 25,000 target tokens)
and fairseq: the pairs are sorted by (source, target) length (ties in a random order)
and cut into batches of at most ``max_tokens`` source + target positions counted with
the padding to the batch's longest source and target
(:func:`attnbench.data.parallel.token_batches`), and the batches are drawn in a random
order; both random orders are a pure function of (seed, epoch), so a resumed run
continues with the same batches. ``train.batch_size`` is then unused in training;
evaluation batches are ``train.eval_batch_size`` sentences either way. The batches are
the same for every variant: a fixed-length variant's batches hold the same pairs,
padded to ``max_len``.

Training minimises label-smoothed cross-entropy (Szegedy et al. 2016; ε = 0.1 in
Vaswani et al. 2017). **Checkpoint selection** is by validation loss (teacher-forced
cross-entropy per target token, no smoothing), as fairseq does by default: it is one
forward pass per sentence where a greedy BLEU evaluation is one decoder pass per output
token, it is smooth where BLEU on a few hundred sentences of a small model moves in
noisy steps, and it does not multiply the validation cost of slow variants.

The test split is translated by beam search (:mod:`attnbench.decoding`; beam size,
GNMT length penalty α and the output-length rule ``a·|x| + b`` come from the data
config), detokenized (byte-level BPE decoding is exact), and scored with sacrebleu
(Post 2018, "A Call for Clarity in Reporting BLEU Scores") on the detokenized text:
corpus BLEU (13a tokenization) and chrF (Popović 2015), each with its sacrebleu
signature and a 95 % bootstrap confidence interval (Koehn 2004, "Statistical
Significance Tests for Machine Translation Evaluation"): ``bootstrap`` resamples of the
test sentences drawn with ``numpy.random.default_rng(bootstrap_seed)``, each scored
from the sum of sacrebleu's sentence-level sufficient statistics, interval = the
2.5 % / 97.5 % order statistics — the same draws and order statistics as sacrebleu's
own ``--confidence`` (seed 12345), reported as an interval rather than mean ± half-width.
A ``head_mask`` passed to :meth:`Translation.evaluate` (head ablation) gates the
self-attention heads of the encoder and the decoder alike.
The hypotheses, references and sources are saved beside the record
(``<stem>.hyp.txt``, ``<stem>.ref.txt``, ``<stem>.src.txt``, one sentence per line), so
``sacrebleu <stem>.ref.txt -i <stem>.hyp.txt -m bleu chrf`` recomputes the scores; the
record names the tokenizer file in the data directory with its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import baselines as bl
from attnbench import decoding, text
from attnbench.attention import Requirements, VariantSpec, get_variant
from attnbench.data.bundled import read_table
from attnbench.data.parallel import (
    BIBLE_COLUMNS,
    SPLITS,
    bible_to_translation_rows,
    normalize_whitespace,
    read_translation_splits,
    stable_sample,
    token_batches,
)
from attnbench.metrics import score_translations
from attnbench.model import EncoderDecoder, ModelConfig
from attnbench.records import atomic_write_text
from attnbench.tasks.base import (
    Batch,
    DatasetInfo,
    EmptySplitError,
    Evaluation,
    Task,
    TaskSetup,
    analysis_mask,
    attention_statistics,
    register_task,
    with_aux,
)

# Text files beside the record: (artifact kind, prediction key, file suffix).
ARTIFACTS = (
    ("hypotheses", "hypothesis", ".hyp.txt"),
    ("references", "reference", ".ref.txt"),
    ("sources", "source", ".src.txt"),
)
IGNORE = -100  # target id that the loss skips (padding)
# Special ids the decoder never generates (EOS only ends a hypothesis).
BANNED = tuple(i for i in range(len(text.SPECIALS)) if i != text.EOS)


@dataclass
class TranslationData:
    """Data, tokenization and decoding knobs (``tasks.translation.data``).

    Defaults follow IWSLT 2017 De→En as usually run (joint BPE of 10K, Vaswani et al.'s
    decoding: beam 4, length penalty 0.6, output length ≤ input length + 50).
    """

    source: str = "huggingface"  # "huggingface" (hub or local files in its schema) | "bundled"
    hf_path: str = "iwslt2017"  # huggingface: dataset path ("json"/"parquet" for local files)
    hf_name: str | None = "iwslt2017-de-en"  # huggingface: configuration name
    hf_revision: str | None = None  # huggingface: e.g. "refs/convert/parquet" for script sets
    data_dir: str | None = None  # huggingface: folder inside the dataset (conversion config)
    data_files: str | dict[str, str] | None = None  # huggingface: local files per split
    bible_file: str | None = None  # bundled: a bible.parquet (None: the shipped one)
    src_lang: str = "de"
    tgt_lang: str = "en"
    vocab_size: int = 10_000  # joint byte-level BPE vocabulary, specials included
    max_length: int = 256  # subwords per side; longer training pairs are dropped
    max_words: int | None = None  # every split: keep pairs of ≤ this many words per side
    n_train: int | None = None  # caps (None: the whole split)
    n_val: int | None = None
    n_test: int | None = None
    label_smoothing: float = 0.1  # training loss only (Vaswani et al. 2017)
    beam_size: int = 4  # test decoding (1: greedy)
    length_penalty: float = 0.6  # GNMT α: score = log P / ((5 + |Y|) / 6)^α
    max_len_a: float = 1.0  # output budget a·|source| + b subwords (EOS included) ...
    max_len_b: int = 50  # ... capped by the model's max_len
    bootstrap: int = 1000  # resamples for the 95 % confidence intervals (0: none)
    bootstrap_seed: int = 12345  # sacrebleu's default seed
    # training batches of at most this many source + target positions (padding included),
    # sorted by length; None: train.batch_size sentences per batch, length-bucketed
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        where = "tasks.translation.data"
        if self.source not in ("huggingface", "bundled"):
            raise ValueError(f"{where}.source={self.source!r}; valid choices: huggingface, bundled")
        if self.src_lang == self.tgt_lang:
            raise ValueError(f"{where}: src_lang and tgt_lang are both {self.src_lang!r}")
        if self.source == "bundled":
            for key in ("src_lang", "tgt_lang"):
                if getattr(self, key) not in BIBLE_COLUMNS:
                    raise ValueError(
                        f"{where}.{key}={getattr(self, key)!r}; the bundled bible has: "
                        f"{', '.join(BIBLE_COLUMNS)}"
                    )
        if self.vocab_size <= len(text.SPECIALS) + 256:
            raise ValueError(
                f"{where}.vocab_size must exceed {len(text.SPECIALS) + 256} "
                f"(specials + 256 bytes), got {self.vocab_size}"
            )
        positive = {"max_length": self.max_length, "beam_size": self.beam_size}
        for key in ("n_train", "n_val", "n_test", "max_words"):
            if getattr(self, key) is not None:
                positive[key] = getattr(self, key)
        for key, value in positive.items():
            if value <= 0:
                raise ValueError(f"{where}.{key} must be positive, got {value}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                f"{where}.label_smoothing must be in [0, 1), got {self.label_smoothing}"
            )
        if self.max_tokens is not None and self.max_tokens < 2 * (self.max_length + 1):
            raise ValueError(
                f"{where}.max_tokens={self.max_tokens} cannot hold one pair of max_length="
                f"{self.max_length} subwords: valid: at least {2 * (self.max_length + 1)}"
            )
        if self.length_penalty < 0 or self.max_len_a < 0 or self.bootstrap < 0:
            raise ValueError(
                f"{where}: length_penalty, max_len_a and bootstrap must be >= 0, got "
                f"{self.length_penalty}, {self.max_len_a}, {self.bootstrap}"
            )


@dataclass(frozen=True)
class Pair:
    """One prepared sentence pair: subword ids for the model, whole texts for scoring."""

    src_ids: list[int]  # ≤ max_length subwords (no specials)
    tgt_ids: list[int]  # ≤ max_length subwords (no specials)
    source: str
    reference: str

    @property
    def length(self) -> int:
        """Longer side in model positions (the width this pair forces on its batch)."""
        return max(len(self.src_ids), len(self.tgt_ids)) + 1


# ---------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------
@register_task
class Translation(Task):
    """Translation (IWSLT / WMT, or the bundled en→es bible offline); metric: sacrebleu BLEU."""

    name = "translation"
    family = "translation"
    metric = "bleu"
    higher_is_better = True
    head = "seq2seq"
    selection_metric = "loss"  # validation cross-entropy; see the module docstring
    selection_higher_is_better = False
    DataConfig = TranslationData
    # Rows per hub split of the published data sets (``attnbench data check``), keyed by
    # "<dataset>/<configuration>": the hub's IWSLT 2017 (Cettolo et al. 2017: dev2010,
    # tst2010-2015), WMT14 (newstest2013, newstest2014) and WMT16 (newstest2015, -2016).
    published_sizes: ClassVar[dict[str, dict[str, int]]] = {
        "iwslt2017/iwslt2017-de-en": {"train": 206_112, "validation": 888, "test": 8_079},
        "iwslt2017/iwslt2017-en-de": {"train": 206_112, "validation": 888, "test": 8_079},
        "wmt14/de-en": {"train": 4_508_785, "validation": 3_000, "test": 3_003},
        "wmt16/de-en": {"train": 4_548_885, "validation": 2_169, "test": 2_999},
    }

    def __init__(self, data_cfg: TranslationData, setup: TaskSetup | None = None) -> None:
        super().__init__(data_cfg, setup)
        self.cfg: TranslationData = data_cfg
        self.tokenizer: text.SubwordTokenizer | None = None
        self.data_dir: Path | None = None
        self.stats: dict[str, Any] = {}

    # -- description ------------------------------------------------------------------
    def requirements(self) -> Requirements:
        # Batches can be padded to max_len (setup.pad_to), so fixed-length variants run too;
        # cross-attention falls back to standard attention, so it is not required.
        return Requirements(causal=True, padding_mask=True, max_len=self.max_len())

    def dataset_info(self) -> DatasetInfo:
        c = self.cfg
        caps = "/".join("all" if n is None else str(n) for n in (c.n_train, c.n_val, c.n_test))
        words = "" if c.max_words is None else f"pairs of ≤ {c.max_words} words, "
        common = (
            f"{c.src_lang}→{c.tgt_lang}, {words}train/val/test caps {caps}, joint byte-level "
            f"BPE {c.vocab_size}, ≤ {c.max_length} subwords"
        )
        if c.source == "bundled":
            return DatasetInfo(
                f"bible-{c.src_lang}-{c.tgt_lang}",
                "bundled",
                True,
                "KJV / Reina-Valera 1909 verse pairs, split by chapter "
                f"(offline stand-in for IWSLT-style translation), {common}",
            )
        where = c.hf_path + (f"/{c.hf_name}" if c.hf_name else "")
        if c.data_dir is not None:
            where += f" [{c.data_dir}]"
        if c.hf_revision is not None:
            where += f"@{c.hf_revision}"
        if c.data_files is not None:
            where += f" files {c.data_files}"
        name = (c.hf_name or c.hf_path).replace("/", "-")
        return DatasetInfo(name, "huggingface", False, f"{where}, {common}")

    def max_len(self) -> int:
        return self.cfg.max_length + 1  # + [EOS] (source, target) or [BOS] (decoder input)

    def vocab_size(self) -> int:
        if self.tokenizer is None:
            raise RuntimeError("translation: load() the prepared data before building a model")
        return self.tokenizer.vocab_size

    # -- data -----------------------------------------------------------------------------
    def _read_source(self, out_dir: Path) -> dict[str, list[tuple[str, str]]]:
        from attnbench.data.hf import load_hf_dataset

        c = self.cfg
        if c.source == "bundled":
            table = read_table("bible", c.bible_file)
            files = bible_to_translation_rows(table, out_dir / "bible-rows")
            dataset = load_hf_dataset("json", data_files=files)
        else:
            dataset = load_hf_dataset(
                c.hf_path,
                c.hf_name,
                data_dir=c.data_dir,
                data_files=c.data_files,
                revision=c.hf_revision,
            )
        try:
            return read_translation_splits(dataset, c.src_lang, c.tgt_lang)
        except ValueError as exc:
            raise ValueError(f"translation data from {c.source}: {exc}") from None

    def prepare(self, out_dir: Path) -> None:
        c = self.cfg
        out_dir = Path(out_dir)
        texts = self._read_source(out_dir)
        caps = {"train": c.n_train, "val": c.n_val, "test": c.n_test}
        stats: dict[str, Any] = {}
        chosen: dict[str, list[tuple[str, str]]] = {}
        for split in SPLITS:
            pairs = texts[split]
            stats[split] = {"available": len(pairs)}
            if c.max_words is not None:
                pairs = [
                    p for p in pairs if max(len(p[0].split()), len(p[1].split())) <= c.max_words
                ]
                stats[split]["within_max_words"] = len(pairs)
            keep = stable_sample(len(pairs), caps[split], split)
            chosen[split] = [pairs[i] for i in keep]
            stats[split]["selected"] = len(keep)
        if not chosen["train"]:
            raise EmptySplitError("translation: the training split is empty")

        tokenizer = text.SubwordTokenizer.train(
            (sentence for pair in chosen["train"] for sentence in pair), c.vocab_size
        )
        tokenizer.save(out_dir / "tokenizer.json")
        for split in SPLITS:
            pairs = chosen[split]
            src_ids = tokenizer.encode_batch([s for s, _ in pairs])
            tgt_ids = tokenizer.encode_batch([t for _, t in pairs])
            rows = []
            too_long = 0
            for (src, tgt), s_ids, t_ids in zip(pairs, src_ids, tgt_ids, strict=True):
                longer = len(s_ids) > c.max_length or len(t_ids) > c.max_length
                if split == "train" and longer:
                    too_long += 1
                    continue
                too_long += longer
                row = {
                    "source": src,
                    "reference": tgt,
                    "src_ids": s_ids[: c.max_length],
                    "tgt_ids": t_ids[: c.max_length],
                }
                rows.append(json.dumps(row, ensure_ascii=False))
            key = "dropped_too_long" if split == "train" else "truncated_for_model"
            stats[split] |= {"kept": len(rows), key: too_long}
            atomic_write_text(out_dir / f"{split}.jsonl", "".join(r + "\n" for r in rows))
        stats["tokenizer"] = {
            "file": "tokenizer.json",
            "sha256": _sha256(out_dir / "tokenizer.json"),
            "vocab_size": tokenizer.vocab_size,
        }
        atomic_write_text(out_dir / "stats.json", json.dumps(stats, indent=2) + "\n")

    def load(self, data_dir: Path) -> None:
        data_dir = Path(data_dir)
        self.data_dir = data_dir
        self.tokenizer = text.SubwordTokenizer.load(data_dir / "tokenizer.json")
        self.stats = json.loads((data_dir / "stats.json").read_text())
        for split in SPLITS:
            pairs = []
            with open(data_dir / f"{split}.jsonl", encoding="utf-8") as handle:
                for line in handle:
                    row = json.loads(line)
                    pairs.append(
                        Pair(row["src_ids"], row["tgt_ids"], row["source"], row["reference"])
                    )
            too_long = [
                p for p in pairs if max(len(p.src_ids), len(p.tgt_ids)) > self.cfg.max_length
            ]
            if too_long:
                raise ValueError(
                    f"translation {split}: pairs longer than max_length={self.cfg.max_length} "
                    f"subwords in {data_dir}; rerun attnbench prepare"
                )
            self.splits[split] = pairs

    def _collate(self, pairs: Sequence[Pair], index: Sequence[int]) -> Batch:
        src_rows = [[*p.src_ids, text.EOS] for p in pairs]
        dec_rows = [[text.BOS, *p.tgt_ids] for p in pairs]
        src = _pad(src_rows, self.setup.pad_to, text.PAD)  # (B, S)
        tgt = _pad(dec_rows, self.setup.pad_to, text.PAD)  # (B, T)
        targets = _pad([[*p.tgt_ids, text.EOS] for p in pairs], self.setup.pad_to, IGNORE)  # (B, T)
        src_padding, tgt_padding = src != text.PAD, targets != IGNORE
        return Batch(
            {"src": src, "tgt": tgt, "src_padding": src_padding, "tgt_padding": tgt_padding},
            targets,
            int(src_padding.sum() + tgt_padding.sum()),
            torch.tensor(list(index), dtype=torch.long),
        )

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        epoch: int = 0,
        seed: int = 0,
        by_length: bool = False,
    ) -> Iterator[Batch]:
        """Pairs grouped by :func:`attnbench.batching.batch_groups` (length-bucketed when
        ``shuffle``), a pair's length being its longer side's; training batches (``shuffle``)
        with ``max_tokens`` set by :func:`attnbench.data.parallel.token_batches` instead."""
        pairs: list[Pair] = self.splits[split]
        if shuffle and self.cfg.max_tokens is not None:
            if not pairs:
                raise EmptySplitError(f"task {self.name!r}: split {split!r} is empty")
            groups = token_batches(
                [len(p.src_ids) + 1 for p in pairs],  # x … [EOS]
                [len(p.tgt_ids) + 1 for p in pairs],  # [BOS] y … (and y … [EOS])
                self.cfg.max_tokens,
                epoch=epoch,
                seed=seed,
            )
        else:
            groups = self.batch_indices(
                split,
                [p.length for p in pairs],
                batch_size,
                shuffle=shuffle,
                epoch=epoch,
                seed=seed,
                by_length=by_length,
            )
        for idx in groups:
            yield self._collate([pairs[i] for i in idx], idx)

    # -- model ----------------------------------------------------------------------------
    def build_model(
        self, cfg: ModelConfig, variant: VariantSpec, options: dict[str, Any]
    ) -> nn.Module:
        # setup.cross_attention: the run's own variant when it can cross-attend, else the
        # profile's reference variant (attnbench.job.task_setup)
        name = self.setup.cross_attention
        if name is None or name == variant.name:
            if not variant.capabilities.cross_attention:
                raise ValueError(
                    f"variant {variant.name!r} cannot do cross-attention and the task setup "
                    "names no other variant for it (TaskSetup.cross_attention)"
                )
            cross, cross_options = variant, options
        else:
            cross, cross_options = get_variant(name), None
        return EncoderDecoder(self.vocab_size(), cfg, variant, cross, options, cross_options)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor | None]:
        out = model(**batch.inputs)
        loss = F.cross_entropy(
            out.logits.reshape(-1, out.logits.shape[-1]).float(),
            batch.targets.reshape(-1),
            ignore_index=IGNORE,
            label_smoothing=self.cfg.label_smoothing,
        )
        return with_aux(loss, out.aux_loss)

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        split: str,
        batch_size: int,
        device: torch.device,
        **model_kwargs: Any,
    ) -> Evaluation:
        """Validation: teacher-forced loss. Test: loss, and beam search scored by sacrebleu.

        ``model_kwargs`` (e.g. ``head_mask`` for head ablation) go to the self-attention of
        both the encoder and the decoder stack.
        """
        loss_sum, n_tokens, correct = 0.0, 0, 0
        for batch in self.batches(split, batch_size, by_length=True):  # sums: order is free
            batch = batch.to(device)
            inputs = batch.inputs
            memory = model.encoder(inputs["src"], inputs["src_padding"], **model_kwargs)
            logits = model.decode(
                inputs["tgt"],
                memory.hidden,
                inputs["src_padding"],
                inputs["tgt_padding"],
                **model_kwargs,
            ).logits.float()
            flat = batch.targets.reshape(-1)
            loss_sum += float(
                F.cross_entropy(
                    logits.reshape(flat.shape[0], -1), flat, ignore_index=IGNORE, reduction="sum"
                )
            )
            real = flat != IGNORE
            n_tokens += int(real.sum())
            correct += int((logits.argmax(-1).reshape(-1) == flat)[real].sum())
        loss = loss_sum / max(n_tokens, 1)
        metrics: dict[str, Any] = {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "token_accuracy": correct / max(n_tokens, 1),
        }
        if split != "test":
            return Evaluation(metrics, [])
        hypotheses = self.translate(model, split, batch_size, device, **model_kwargs)
        pairs: list[Pair] = self.splits[split]
        references = [p.reference for p in pairs]
        metrics |= score_translations(
            hypotheses, references, bootstrap=self.cfg.bootstrap, seed=self.cfg.bootstrap_seed
        )
        predictions = [
            {"index": i, "source": p.source, "hypothesis": h, "reference": p.reference}
            for i, (p, h) in enumerate(zip(pairs, hypotheses, strict=True))
        ]
        return Evaluation(metrics, predictions)

    @torch.no_grad()
    def translate(
        self,
        model: nn.Module,
        split: str,
        batch_size: int,
        device: torch.device,
        *,
        beam_size: int | None = None,
        **model_kwargs: Any,
    ) -> list[str]:
        """Detokenized translations of a split, in split order (beam search; 1 = greedy)."""
        assert self.tokenizer is not None
        c = self.cfg
        beam = c.beam_size if beam_size is None else beam_size
        pairs: list[Pair] = self.splits[split]
        # Longest sources first, so a batch holds similar lengths and stops together.
        order = sorted(range(len(pairs)), key=lambda i: (-len(pairs[i].src_ids), i))
        model.eval()

        def encode(src: Tensor, src_padding: Tensor | None) -> Tensor:
            return model.encoder(src, src_padding, **model_kwargs).hidden

        def next_logits(
            tgt: Tensor, tgt_padding: Tensor | None, memory: Tensor, mem_pad, last: int
        ) -> Tensor:
            # EncoderDecoder.decode without the output projection at every position: the
            # search needs one position, and the projection is the widest matrix here.
            embedded = model.decoder_embed(tgt)
            out = model.decoder(
                embedded, tgt_padding, memory=memory, memory_padding=mem_pad, **model_kwargs
            )
            return model.lm_head(out.hidden[:, last])  # (B, V)

        out: list[str] = [""] * len(pairs)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = self._collate([pairs[i] for i in idx], idx).to(device)
            src, src_padding = batch.inputs["src"], batch.inputs["src_padding"]
            src_lengths = torch.tensor([len(pairs[i].src_ids) for i in idx])
            budget = decoding.max_output_lengths(
                src_lengths, c.max_len_a, c.max_len_b, self.max_len()
            )
            common = dict(
                bos=text.BOS, eos=text.EOS, pad=text.PAD, banned=BANNED, pad_to=self.setup.pad_to
            )
            if beam == 1:
                ids = decoding.greedy_decode(
                    encode, next_logits, src, src_padding, budget, **common
                )
            else:
                ids = decoding.beam_search(
                    encode,
                    next_logits,
                    src,
                    src_padding,
                    budget,
                    beam_size=beam,
                    alpha=c.length_penalty,
                    **common,
                )
            for i, hyp in zip(idx, ids, strict=True):
                out[i] = normalize_whitespace(self.tokenizer.decode(hyp))
        return out

    # -- analysis and record -----------------------------------------------------------------
    def analysis_batch(self, size: int = 64) -> Batch | None:
        return next(self.batches("val", size))

    @torch.no_grad()
    def attention_analysis(self, model: nn.Module, device: torch.device) -> dict[str, Any]:
        """Encoder self-attention (``layers``) and decoder self-attention (``decoder_layers``)."""
        batch = self.analysis_batch()
        if batch is None:
            return {"available": False, "reason": "no validation batch"}
        batch = batch.to(device)
        model.eval()
        inputs = batch.inputs
        src_pad, tgt_pad = inputs["src_padding"], inputs["tgt_padding"]
        enc = model.encoder(inputs["src"], src_pad, need_weights=True)
        dec = model.decode(inputs["tgt"], enc.hidden, src_pad, tgt_pad, need_weights=True)
        enc_allowed = analysis_mask(src_pad, src_pad.shape[1], device)
        dec_allowed = analysis_mask(tgt_pad, tgt_pad.shape[1], device, causal=True)
        result = attention_statistics(enc.weights, enc_allowed)
        if result.get("available"):
            decoder = attention_statistics(dec.weights, dec_allowed)
            if decoder.get("available"):
                result["decoder_layers"] = decoder["layers"]
        return result

    def baselines(self) -> dict[str, float]:
        """Test BLEU (scored as the model's) of two translations that need no model.

        ``copy_source``: the source sentence itself. ``word_by_word``: each source word
        replaced by the target word it co-occurs with most (Dice coefficient over the
        training pairs; :class:`attnbench.baselines.LexicalTranslator`), in source order.
        """
        test: list[Pair] = self.splits.get("test", [])
        if not test:
            return {}
        references = [p.reference for p in test]

        def bleu(hypotheses: list[str]) -> float:
            return float(score_translations(hypotheses, references, bootstrap=0)["bleu"])

        result = {"copy_source": bleu([p.source for p in test])}
        train: list[Pair] = self.splits.get("train", [])
        if train:
            lexicon = bl.LexicalTranslator.fit(
                [p.source for p in train], [p.reference for p in train]
            )
            result["word_by_word"] = bleu([lexicon.translate(p.source) for p in test])
        return result

    def record_info(self, evaluation: Evaluation | None = None) -> dict[str, Any]:
        c = self.cfg
        info: dict[str, Any] = {
            **super().record_info(evaluation),  # how the test split was evaluated, if said
            "cross_attention": self.setup.cross_attention,
            "selection": "validation loss (teacher-forced cross-entropy per target token)",
            "training_batches": (
                f"at most {c.max_tokens} source + target positions (padding included), "
                "pairs sorted by length, batches in a random order"
                if c.max_tokens is not None
                else "train.batch_size pairs, length-bucketed"
            ),
            "decoding": {
                "test": "beam search" if c.beam_size > 1 else "greedy",
                "beam_size": c.beam_size,
                "length_penalty": c.length_penalty,
                "max_output_length": f"min({c.max_len_a}·|x| + {c.max_len_b}, {self.max_len()})",
                "kv_cache": False,
            },
            "bootstrap": {
                "resamples": c.bootstrap,
                "seed": c.bootstrap_seed,
                "interval": "95 % percentile (order statistics n//40 and n-n//40-1)",
            },
        }
        if self.stats:
            info["data"] = {s: self.stats[s] for s in SPLITS if s in self.stats}
            tokenizer = dict(self.stats.get("tokenizer") or {})
            if self.data_dir is not None and tokenizer:
                tokenizer["file"] = str(self.data_dir / tokenizer["file"])
            info["tokenizer"] = tokenizer
        return info

    def write_artifacts(self, stem: Path, evaluation: Evaluation) -> dict[str, str]:
        """Hypotheses, references and sources, one sentence per line.

        The tokenizer stays in the data directory; the record names it with its SHA-256
        (``task_info.tokenizer``). A copy here would end in ``.json`` and be taken for a
        run record by readers that collect ``*.json`` files.
        """
        rows = sorted(evaluation.predictions, key=lambda r: r["index"])
        files: dict[str, str] = {}
        for kind, key, suffix in ARTIFACTS:
            path = stem.with_name(stem.name + suffix)
            atomic_write_text(path, "".join(r[key] + "\n" for r in rows))
            files[kind] = path.name
        return files


def _pad(rows: Sequence[Sequence[int]], width: int | None, value: int) -> Tensor:
    """Right-pad integer rows to ``width`` (None: the longest row) → (B, width)."""
    width = width or max(len(r) for r in rows)
    return torch.tensor([[*r, *[value] * (width - len(r))] for r in rows], dtype=torch.long)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
