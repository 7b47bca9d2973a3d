"""Long Range Arena ListOps: generator, vocabulary and TSV file I/O.

This re-implements the ListOps generator of the Long Range Arena (Tay et al., 2021;
``google-research/long-range-arena``, ``lra_benchmarks/data/listops.py``) with an explicit
seed, plus a fixed vocabulary and readers/writers for the LRA release files.

Expressions
    Operators ``[MIN``, ``[MAX``, ``[MED`` (median, floored: the median of an even count is
    the mean of the two middle values, rounded down) and ``[SM`` (sum modulo 10) take digit
    values ``0``-``9`` or nested expressions as arguments and are closed by ``]``. The label
    is the value of the whole expression (10 classes). Example, as tokens::

        [MAX 2 9 [MIN 4 7 ] 0 ]        -> 9

Generation (the LRA rules)
    A node at ``depth`` (the root is at depth 1) becomes a digit leaf with probability 0.75
    (always at ``max_depth``); otherwise it is an operator with ``randint(2, max_args)``
    children at ``depth + 1``. A tree's length is its token count (operator and ``]`` count
    one each). Trees with ``min_length < length < max_length`` are kept, duplicates dropped,
    and the first ``n_train``, then ``n_val``, then ``n_test`` distinct trees form the
    splits. LRA used ``max_depth=10, max_args=10, 500 < length < 2000`` and 96K/2K/2K
    examples. The distribution is the original's; the differences are reproducibility
    only: the original drew from the global, unseeded :mod:`random` state and split in
    ``set`` iteration order, while here every call owns a ``random.Random(seed)`` (the
    shape of a tree is drawn before its digits and operators) and splits in generation
    order.

Release file format (``basic_train.tsv``, ``basic_val.tsv``, ``basic_test.tsv``)
    Tab-separated, header ``Source<TAB>Target``. ``Target`` is the label; ``Source`` is the
    expression written the way the LRA generator prints its binary-pair tree: every
    operator application is folded left into pairs, each pair wrapped in ``( ... )``::

        ( ( ( [MAX 2 ) ( ( ( [MIN 9 ) 4 ) ] ) ) ] )      (= [MAX 2 [MIN 9 4 ] ])

    The parentheses carry no information; the LRA input pipeline deletes ``(`` and ``)``
    and keeps ``]`` (renamed ``X``) before whitespace tokenization. The first released
    pipeline used an alphanumeric-only tokenizer that also dropped ``]`` and the ``[``
    prefix (long-range-arena issue #14), which made the nesting unrecoverable. Here the
    parentheses are stripped on reading, written on writing, and ``]`` is always a token.

Vocabulary
    :data:`VOCAB` is fixed: ``[PAD]`` (id 0), ``[CLS]`` (id 1), the four operators, ``]``
    and the ten digits: 17 tokens.
"""

from __future__ import annotations

import operator
import os
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

__all__ = [
    "CLOSE",
    "CLS",
    "CLS_ID",
    "DIGITS",
    "NUM_CLASSES",
    "OPERATORS",
    "PAD",
    "PAD_ID",
    "SPLIT_FILES",
    "TOKEN_TO_ID",
    "TSV_HEADER",
    "VOCAB",
    "ListOpsExample",
    "Tree",
    "apply_operator",
    "decode",
    "encode",
    "evaluate_tokens",
    "evaluate_tree",
    "generate_listops",
    "generate_tree",
    "parse_source",
    "read_tsv",
    "release_source",
    "root_operator",
    "root_operator_baseline",
    "tree_tokens",
    "write_tsv",
]

OPERATORS: tuple[str, ...] = ("[MIN", "[MAX", "[MED", "[SM")
"""The LRA ListOps operators (the original's FIRST/LAST are disabled there too)."""
CLOSE = "]"
"""Closing bracket of an operator application."""
DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))
"""Value tokens ``"0"`` .. ``"9"``."""
PAD, CLS = "[PAD]", "[CLS]"
VOCAB: tuple[str, ...] = (PAD, CLS, *OPERATORS, CLOSE, *DIGITS)
"""Fixed vocabulary: PAD (id 0), CLS (id 1), operators, ``]``, digits (17 tokens)."""
TOKEN_TO_ID: dict[str, int] = {tok: i for i, tok in enumerate(VOCAB)}
PAD_ID = TOKEN_TO_ID[PAD]
CLS_ID = TOKEN_TO_ID[CLS]
NUM_CLASSES = 10
TSV_HEADER: tuple[str, str] = ("Source", "Target")
SPLIT_FILES: dict[str, str] = {
    "train": "basic_train.tsv",
    "val": "basic_val.tsv",
    "test": "basic_test.tsv",
}

Tree: TypeAlias = "int | tuple[str, tuple[Tree, ...]]"
"""A leaf is an ``int`` 0..9; a node is ``(operator, (child, ...))``."""

VALUE_P = 0.25
"""A non-maximal-depth node is an operator iff ``rng.random() <= VALUE_P`` (LRA: 0.25)."""

_VALUES: tuple[int, ...] = tuple(range(10))
_OPERATOR_SET = frozenset(OPERATORS)
_DIGIT_SET = frozenset(DIGITS)
_EXPRESSION_TOKENS = frozenset((*OPERATORS, CLOSE, *DIGITS))
_PARENS = str.maketrans("", "", "()")
_MIN_STALL_ATTEMPTS = 100_000
_STALL_FACTOR = 50
_EXACT_CHECK_MAX_LENGTH = 20_000


@dataclass(frozen=True, slots=True)
class ListOpsExample:
    """One ListOps example: the flat token sequence and its value (the class label)."""

    tokens: tuple[str, ...]
    label: int


# --------------------------------------------------------------------------- evaluation


def apply_operator(op: str, values: Sequence[int]) -> int:
    """Apply a ListOps operator to its (already evaluated) argument values.

    ``[MED`` of an even count is the floored mean of the two middle values, as
    ``int(numpy.median(values))`` in LRA; ``[SM`` is the sum modulo 10.
    """
    if not values:
        raise ValueError(f"operator {op!r} needs at least one argument")
    if op == "[MIN":
        return min(values)
    if op == "[MAX":
        return max(values)
    if op == "[MED":
        ordered = sorted(values)
        mid = len(ordered) // 2
        if len(ordered) % 2:
            return ordered[mid]
        return (ordered[mid - 1] + ordered[mid]) // 2
    if op == "[SM":
        return sum(values) % 10
    raise ValueError(f"unknown ListOps operator {op!r}; expected one of {', '.join(OPERATORS)}")


def evaluate_tree(tree: Tree) -> int:
    """Return the value (0..9) of a tree made by :func:`generate_tree`."""
    if isinstance(tree, int) and not isinstance(tree, bool):
        if not 0 <= tree <= 9:
            raise ValueError(f"ListOps leaf must be a digit 0..9, got {tree!r}")
        return tree
    if not (isinstance(tree, tuple) and len(tree) == 2):
        raise ValueError(f"malformed ListOps tree node: {tree!r}")
    op, children = tree
    return apply_operator(op, [evaluate_tree(child) for child in children])


def evaluate_tokens(tokens: Sequence[str]) -> int:
    """Return the value of a flat token sequence (stack-based; no parentheses allowed)."""
    stack: list[tuple[str, list[int]]] = []
    result: int | None = None
    for i, tok in enumerate(tokens):
        if result is not None:
            raise ValueError(f"trailing token {tok!r} at position {i} after a complete expression")
        if tok in _OPERATOR_SET:
            stack.append((tok, []))
        elif tok in _DIGIT_SET or tok == CLOSE:
            if tok == CLOSE:
                if not stack:
                    raise ValueError(f"unmatched {CLOSE!r} at position {i}")
                op, values = stack.pop()
                value = apply_operator(op, values)
            else:
                value = int(tok)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        else:
            raise ValueError(f"unknown ListOps token {tok!r} at position {i}")
    if stack:
        raise ValueError(f"{len(stack)} unclosed operator(s) at end of expression")
    if result is None:
        raise ValueError("empty ListOps expression")
    return result


# --------------------------------------------------------------------------- trees


class _TooLong(Exception):
    """Internal signal: the tree being grown already reached the length limit."""


class _Sampler:
    """Draws trees from ``rng`` with the LRA rules, in two steps: shape, then labels.

    Each node draws ``u = rng.random()`` (below ``max_depth`` only) and is an operator iff
    ``u <= VALUE_P``; an operator then draws its child count uniformly from
    ``2..max_args``. The shape is grown first (iteratively, depth-first); the digits and
    operators, uniform and independent of the shape, are drawn afterwards in preorder, so
    a tree that is rejected for its length costs no label draws. With ``limit`` set, growth
    stops (raising :class:`_TooLong`) as soon as the tree has ``limit`` tokens or more:
    such a tree would be rejected anyway, so the distribution of kept trees is unchanged.
    Uniform integers are drawn as ``int(rng.random() * n)`` (bias below 1e-15), several
    times faster than ``rng.randint``/``rng.choice``.
    """

    def __init__(
        self, rng: random.Random, max_depth: int, max_args: int, limit: int | None = None
    ) -> None:
        self._draw = rng.random
        self._max_depth = max_depth
        self._span = max_args - 1  # child count = 2 + int(draw() * span): 2..max_args
        self._cap = sys.maxsize if limit is None else limit

    def shape(self, depth: int) -> tuple[list[int], int]:
        """Grow a shape: preorder child counts (0 for a digit leaf) and its token count."""
        draw, max_depth, span, cap = self._draw, self._max_depth, self._span, self._cap
        shape: list[int] = []
        add = shape.append
        pending = [depth]  # depths of nodes still to grow; the last one is next
        pop = pending.pop
        length = 0
        while pending:
            d = pop()
            if d < max_depth and draw() <= VALUE_P:
                n_children = 2 + int(draw() * span)
                length += 2
                if length >= cap:
                    raise _TooLong
                add(n_children)
                pending += [d + 1] * n_children
            else:
                length += 1
                if length >= cap:
                    raise _TooLong
                add(0)
        return shape, length

    def label(self, shape: list[int]) -> Tree:
        """Turn a shape into a tree, drawing digits and operators in preorder."""
        draw = self._draw
        n_ops = len(OPERATORS)
        it = iter(shape)

        def build() -> Tree:
            n_children = next(it)
            if not n_children:
                return int(draw() * 10)
            children = tuple([build() for _ in range(n_children)])
            return (OPERATORS[int(draw() * n_ops)], children)

        return build()


def generate_tree(
    rng: random.Random, depth: int, max_depth: int, max_args: int
) -> tuple[Tree, int]:
    """Draw one random tree with the LRA rules; return ``(tree, length)``.

    ``length`` is the number of tokens of :func:`tree_tokens` of the tree. The shape is
    drawn first, then the digits and operators (see :class:`_Sampler`); only ``rng`` is
    used, never the global random state.
    """
    _check_int("depth", depth, minimum=1)
    _check_int("max_depth", max_depth, minimum=1)
    _check_int("max_args", max_args, minimum=2)
    sampler = _Sampler(rng, max_depth, max_args)
    shape, length = sampler.shape(depth)
    return sampler.label(shape), length


_CLOSE_MARK = object()


def tree_tokens(tree: Tree) -> list[str]:
    """Flatten a tree into its token list (prefix order, ``]`` after each node's children)."""
    out: list[str] = []
    stack: list[object] = [tree]
    while stack:
        node = stack.pop()
        if node is _CLOSE_MARK:
            out.append(CLOSE)
        elif isinstance(node, int) and not isinstance(node, bool):
            if not 0 <= node <= 9:
                raise ValueError(f"ListOps leaf must be a digit 0..9, got {node!r}")
            out.append(DIGITS[node])
        elif isinstance(node, tuple) and len(node) == 2 and node[0] in _OPERATOR_SET:
            out.append(node[0])
            stack.append(_CLOSE_MARK)
            stack.extend(reversed(node[1]))
        else:
            raise ValueError(f"malformed ListOps tree node: {node!r}")
    return out


# --------------------------------------------------------------------------- datasets


def _check_int(name: str, value: object, *, minimum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _longest_tree(max_depth: int, max_args: int, cap: int) -> int:
    """Length of the longest possible tree, or the first value above ``cap``."""
    longest = 1
    for _ in range(max_depth - 1):
        longest = 2 + max_args * longest
        if longest > cap:
            break
    return longest


def _has_length_in_window(min_length: int, max_length: int, max_depth: int, max_args: int) -> bool:
    """Whether some tree has ``min_length < length < max_length`` (exact, bit-set DP).

    Bit ``L`` of the mask for depth ``d`` says a subtree rooted at depth ``d`` can have
    length ``L`` (only lengths below ``max_length`` are tracked).
    """
    full = (1 << max_length) - 1
    window = full >> (min_length + 1) << (min_length + 1)
    lengths = 0b10 & full  # depth == max_depth: a single digit
    for _ in range(max_depth - 1):
        if lengths & window:
            return True
        members = [i for i in range(max_length) if lengths >> i & 1]
        sums = lengths  # sums of exactly k subtree lengths, k = 1 at first
        children = 0
        for _k in range(2, max_args + 1):
            nxt = 0
            for m in members:
                nxt |= sums << m
            sums = nxt & full
            if not sums:
                break
            children |= sums
        widened = (0b10 | (children << 2)) & full
        if widened == lengths:
            break
        lengths = widened
    return bool(lengths & window)


def _check_feasible(min_length: int, max_length: int, max_depth: int, max_args: int) -> None:
    params = (
        f"min_length={min_length}, max_length={max_length}, "
        f"max_depth={max_depth}, max_args={max_args}"
    )
    if max_length - min_length < 2:
        raise ValueError(
            f"impossible ListOps bounds ({params}): no length L with min_length < L < max_length"
        )
    longest = _longest_tree(max_depth, max_args, cap=max_length)
    if longest <= min_length:
        raise ValueError(
            f"impossible ListOps bounds ({params}): the longest possible tree has {longest} "
            f"tokens, not more than min_length; raise max_depth or max_args or lower min_length"
        )
    if max_length <= _EXACT_CHECK_MAX_LENGTH and not _has_length_in_window(
        min_length, max_length, max_depth, max_args
    ):
        raise ValueError(
            f"impossible ListOps bounds ({params}): no tree of this depth and arity has a "
            f"length strictly between min_length and max_length"
        )


def generate_listops(
    *,
    seed: int,
    n_train: int,
    n_val: int,
    n_test: int,
    min_length: int,
    max_length: int,
    max_depth: int = 10,
    max_args: int = 10,
    progress: bool = False,
) -> dict[str, list[ListOpsExample]]:
    """Generate distinct ListOps examples with the LRA rules and split them in order.

    Returns ``{"train": [...], "val": [...], "test": [...]}`` of exactly the requested
    sizes. The same arguments always give the same data (a private ``random.Random(seed)``
    is used; the global random state is untouched).

    Raises ValueError for invalid arguments, for length bounds no tree can meet, and when
    no new example turned up in a long run of attempts (bounds too tight, or fewer distinct
    trees exist than requested): at least 100,000 attempts, and 50 times the mean number
    of attempts per example so far.
    """
    _check_int("seed", seed)
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        _check_int(name, value, minimum=0)
    _check_int("min_length", min_length, minimum=0)
    _check_int("max_length", max_length, minimum=1)
    _check_int("max_depth", max_depth, minimum=1)
    _check_int("max_args", max_args, minimum=2)
    _check_feasible(min_length, max_length, max_depth, max_args)

    n_total = n_train + n_val + n_test
    sampler = _Sampler(random.Random(seed), max_depth, max_args, limit=max_length)
    seen: set[tuple[str, ...]] = set()
    examples: list[ListOpsExample] = []
    attempts = 0
    attempts_at_last_new = 0
    bar = None
    if progress and n_total:
        from tqdm import tqdm

        bar = tqdm(total=n_total, desc="listops", unit="ex", file=sys.stderr)
    try:
        while len(examples) < n_total:
            attempts += 1
            try:
                shape, length = sampler.shape(1)
            except _TooLong:
                length = max_length
            if min_length < length < max_length:
                tree = sampler.label(shape)
                tokens = tuple(tree_tokens(tree))
                if tokens not in seen:
                    seen.add(tokens)
                    examples.append(ListOpsExample(tokens, evaluate_tree(tree)))
                    attempts_at_last_new = attempts
                    if bar is not None:
                        bar.update(1)
                    continue
            stalled = attempts - attempts_at_last_new
            if stalled >= _MIN_STALL_ATTEMPTS and (
                not examples or stalled > _STALL_FACTOR * attempts_at_last_new / len(examples)
            ):
                raise ValueError(
                    f"cannot generate {n_total} distinct ListOps examples with "
                    f"min_length={min_length}, max_length={max_length}, max_depth={max_depth}, "
                    f"max_args={max_args}: only {len(examples)} found, none new in the last "
                    f"{stalled} attempts (bounds too tight or too few distinct trees)"
                )
    finally:
        if bar is not None:
            bar.close()
    return {
        "train": examples[:n_train],
        "val": examples[n_train : n_train + n_val],
        "test": examples[n_train + n_val :],
    }


# --------------------------------------------------------------------------- vocabulary


def encode(tokens: Sequence[str]) -> list[int]:
    """Map tokens to their ids in :data:`VOCAB`; an unknown token raises ValueError."""
    try:
        return [TOKEN_TO_ID[tok] for tok in tokens]
    except KeyError as exc:
        raise ValueError(
            f"unknown ListOps token {exc.args[0]!r}; valid tokens: {' '.join(VOCAB)}"
        ) from None


def decode(ids: Sequence[int]) -> list[str]:
    """Map ids back to tokens of :data:`VOCAB`; an out-of-range id raises ValueError."""
    n_vocab = len(VOCAB)
    out: list[str] = []
    for i in ids:
        try:
            idx = operator.index(i)
        except TypeError:
            raise ValueError(f"ListOps token id must be an integer, got {i!r}") from None
        if not 0 <= idx < n_vocab:
            raise ValueError(f"ListOps token id {idx} out of range 0..{n_vocab - 1}")
        out.append(VOCAB[idx])
    return out


# --------------------------------------------------------------------------- files


def _argument_counts(tokens: Sequence[str]) -> list[int]:
    """Check that ``tokens`` is one well-formed expression; return per-position arg counts."""
    if not tokens:
        raise ValueError("empty ListOps expression")
    counts = [0] * len(tokens)
    open_ops: list[int] = []
    for i, tok in enumerate(tokens):
        if i and not open_ops:
            raise ValueError(f"trailing token {tok!r} at position {i} after a complete expression")
        if tok in _OPERATOR_SET:
            if open_ops:
                counts[open_ops[-1]] += 1
            open_ops.append(i)
        elif tok in _DIGIT_SET:
            if open_ops:
                counts[open_ops[-1]] += 1
        elif tok == CLOSE:
            if not open_ops:
                raise ValueError(f"unmatched {CLOSE!r} at position {i}")
            if not counts[open_ops[-1]]:
                raise ValueError(f"operator at position {open_ops[-1]} has no arguments")
            open_ops.pop()
        else:
            raise ValueError(f"unknown ListOps token {tok!r} at position {i}")
    if open_ops:
        raise ValueError(f"{len(open_ops)} unclosed operator(s) at end of expression")
    return counts


def release_source(tokens: Sequence[str]) -> str:
    """Render flat tokens as an LRA release ``Source`` string (with its parentheses).

    ``[MAX 2 [MIN 9 4 ] ]`` becomes ``( ( ( [MAX 2 ) ( ( ( [MIN 9 ) 4 ) ] ) ) ] )``:
    each operator application ``op a1 .. ak ]`` is the left fold ``(((op a1) ..) ak) ]``
    with every pair in parentheses. Raises ValueError for a malformed expression.
    """
    counts = _argument_counts(tokens)
    parts: list[str] = []
    open_ops = 0
    for tok, n_args in zip(tokens, counts, strict=True):
        if tok in _OPERATOR_SET:
            parts.extend(["("] * (n_args + 1))
            parts.append(tok)
            open_ops += 1
            continue
        parts.append(tok)
        if tok == CLOSE:
            parts.append(")")
            open_ops -= 1
        if open_ops:
            parts.append(")")
    return " ".join(parts)


def parse_source(source: str) -> tuple[str, ...]:
    """Split a ``Source`` string into tokens, dropping the release's ``(`` and ``)``."""
    return tuple(source.translate(_PARENS).split())


def write_tsv(path: str | Path, examples: Sequence[ListOpsExample]) -> None:
    """Write examples in the LRA release format, atomically.

    Header ``Source<TAB>Target``, one example per line, ``Source`` with the release's
    parentheses (see :func:`release_source`). The file is written to a temporary file in
    the same directory and moved into place with :func:`os.replace`; missing parent
    directories are created.
    """
    path = Path(path)
    lines = ["\t".join(TSV_HEADER) + "\n"]
    for i, example in enumerate(examples):
        label = example.label
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 9:
            raise ValueError(f"example {i}: label must be an int 0..9, got {label!r}")
        try:
            source = release_source(example.tokens)
        except ValueError as exc:
            raise ValueError(f"example {i}: {exc}") from None
        lines.append(f"{source}\t{label}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_tsv(path: str | Path) -> list[ListOpsExample]:
    """Read an LRA ListOps TSV file (a release file or one from :func:`write_tsv`).

    Parentheses are dropped from ``Source``; ``\\r\\n`` line ends and blank lines are
    accepted. A file with only the header gives ``[]``. Raises FileNotFoundError for a
    missing file and ValueError, naming the file and line, for a bad header, a line
    without exactly two tab-separated fields, a label that is not an int 0..9, an unknown
    token or unbalanced brackets.
    """
    path = Path(path)
    try:
        f = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"ListOps data file not found: {path}") from None
    examples: list[ListOpsExample] = []
    with f:
        header = f.readline().rstrip("\r\n")
        if tuple(header.split("\t")) != TSV_HEADER:
            raise ValueError(
                f"{path}:1: bad header {header!r}; expected {chr(9).join(TSV_HEADER)!r}"
            )
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise ValueError(
                    f"{path}:{lineno}: expected 2 tab-separated fields, got {len(fields)}"
                )
            source, target = fields
            try:
                label = int(target)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: label {target!r} is not an integer") from None
            if not 0 <= label <= 9:
                raise ValueError(f"{path}:{lineno}: label {label} is outside 0..9")
            tokens = parse_source(source)
            if not tokens:
                raise ValueError(f"{path}:{lineno}: empty Source expression")
            counts = Counter(tokens)
            unknown = counts.keys() - _EXPRESSION_TOKENS
            if unknown:
                raise ValueError(
                    f"{path}:{lineno}: unknown token(s) {', '.join(map(repr, sorted(unknown)))}; "
                    f"valid tokens: {' '.join(sorted(_EXPRESSION_TOKENS, key=TOKEN_TO_ID.get))}"
                )
            n_ops = sum(counts[op] for op in OPERATORS)
            if n_ops != counts[CLOSE]:
                raise ValueError(
                    f"{path}:{lineno}: unbalanced expression: {n_ops} operator(s) but "
                    f"{counts[CLOSE]} {CLOSE!r}"
                )
            examples.append(ListOpsExample(tokens, label))
    return examples


def root_operator(tokens: Sequence[str]) -> str | None:
    """The expression's outermost operator: its first operator token (None for a bare digit)."""
    return next((tok for tok in tokens if tok in _OPERATOR_SET), None)


def root_operator_baseline(
    train: Sequence[ListOpsExample], test: Sequence[ListOpsExample]
) -> float:
    """Accuracy on ``test`` of predicting the most frequent ``train`` label per root operator.

    The root operator alone shifts the answer's distribution a lot (``[SM`` is near uniform,
    ``[MAX`` leans to 9, ``[MIN`` to 0, ``[MED`` to the middle digits), so this is the bar a
    model passes by reading one token. Ties go to the smallest label; an operator not seen
    in ``train`` gets the overall majority label. Raises ValueError if either split is empty.
    """
    from attnbench.baselines import accuracy, grouped_majority

    if not train:
        raise ValueError("root_operator_baseline needs a non-empty train split")
    if not test:
        raise ValueError("root_operator_baseline needs a non-empty test split")
    predictions = grouped_majority(
        [root_operator(e.tokens) for e in train],
        [e.label for e in train],
        [root_operator(e.tokens) for e in test],
    )
    return accuracy(predictions, [e.label for e in test])
