"""Subword tokenization shared by the text tasks (translation, GLUE, LM on subwords).

A thin wrapper around HuggingFace ``tokenizers``: a byte-level BPE (Sennrich et al.
2016, "Neural Machine Translation of Rare Words with Subword Units"; byte-level as in
GPT-2) trained on the training split only, with fixed special tokens, saved as one
JSON file beside the data so every run uses the same vocabulary and anyone can reload
it. Decoding is exact detokenization: ``decode(encode(s)) == s`` for any text after
NFC normalization (byte-level BPE needs no language-specific detokenizer).

Special token ids are fixed for every tokenizer built here:

    [PAD] = 0, [CLS] = 1, [BOS] = 2, [EOS] = 3, [SEP] = 4, [UNK] = 5, [MASK] = 6
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from attnbench.records import atomic_write_text

SPECIALS = ("[PAD]", "[CLS]", "[BOS]", "[EOS]", "[SEP]", "[UNK]", "[MASK]")
PAD, CLS, BOS, EOS, SEP, UNK, MASK = range(len(SPECIALS))


class SubwordTokenizer:
    """Byte-level BPE with the fixed special ids above."""

    def __init__(self, tokenizer) -> None:  # a tokenizers.Tokenizer
        self._tok = tokenizer
        for i, name in enumerate(SPECIALS):
            if tokenizer.token_to_id(name) != i:
                raise ValueError(f"tokenizer: special token {name} must have id {i}")

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2
    ) -> SubwordTokenizer:
        """Learn a byte-level BPE vocabulary of at most ``vocab_size`` entries from ``texts``."""
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        if vocab_size <= len(SPECIALS) + 256:
            raise ValueError(
                f"subword vocab_size must exceed {len(SPECIALS) + 256} "
                f"(specials + 256 byte symbols), got {vocab_size}"
            )
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIALS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> SubwordTokenizer:
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as exc:  # tokenizers raises a bare Exception on bad files
            raise ValueError(f"cannot read tokenizer file {path}: {exc}") from None

    def save(self, path: str | Path) -> None:
        from attnbench.records import atomic_write_text

        atomic_write_text(Path(path), self._tok.to_str(pretty=False))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens are dropped."""
        return self._tok.decode([i for i in ids if i >= len(SPECIALS)], skip_special_tokens=True)


# ---------------------------------------------------------------------------------------
# Whole-text tokenizers of the language-modelling task: one id per character, per UTF-8
# byte, or per BPE token; the same encode/decode for each, the specials first in every one
# ---------------------------------------------------------------------------------------
class CharTokenizer:
    """One id per Unicode character seen in the training split; others → ``[UNK]``."""

    kind = "char"

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = list(symbols)  # id − len(SPECIALS) → character, sorted by code point
        self._codes = np.array([ord(c) for c in self.symbols], dtype=np.int64)
        if np.any(np.diff(self._codes) <= 0):
            raise ValueError("char vocabulary must be distinct characters sorted by code point")

    @classmethod
    def train(cls, texts: Sequence[str]) -> CharTokenizer:
        return cls(sorted(set().union(*map(set, texts))) if texts else [])

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.symbols)

    def encode(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        if not len(self._codes):
            return np.full(len(codes), UNK, dtype=np.int64)
        where = np.searchsorted(self._codes, codes).clip(max=len(self._codes) - 1)
        known = self._codes[where] == codes
        return np.where(known, where + len(SPECIALS), UNK)

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i >= len(SPECIALS):
                out.append(self.symbols[i - len(SPECIALS)])
            elif i == UNK:
                out.append("\ufffd")
        return "".join(out)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps({"kind": "char", "symbols": self.symbols}) + "\n")


class ByteTokenizer:
    """UTF-8 bytes: byte b has id ``len(SPECIALS) + b``; nothing is unknown."""

    kind = "byte"
    vocab_size = len(SPECIALS) + 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + len(SPECIALS)

    def decode(self, ids: Sequence[int]) -> str:
        data = bytes(int(i) - len(SPECIALS) for i in ids if int(i) >= len(SPECIALS))
        return data.decode("utf-8", errors="replace")


class BPETokenizer:
    """:class:`attnbench.text.SubwordTokenizer` behind the same encode/decode as the others."""

    kind = "bpe"

    def __init__(self, tok: SubwordTokenizer) -> None:
        self.tok = tok
        self.vocab_size = tok.vocab_size

    def encode_rows(self, rows: Sequence[str], chunk: int = 10_000) -> np.ndarray:
        # Byte-level BPE pre-splits on whitespace, so row-wise encoding is an exact
        # tokenization of the joined text (decode of the concatenation gives it back).
        parts = [
            np.fromiter((i for ids in self.tok.encode_batch(rows[s : s + chunk]) for i in ids), int)
            for s in range(0, len(rows), chunk)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tok.encode(text), dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids])


Tokenizer = CharTokenizer | ByteTokenizer | BPETokenizer
