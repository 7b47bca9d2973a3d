"""Tests for the LRA ListOps generator, vocabulary and TSV I/O (attnbench.data.listops)."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest

from attnbench import baselines as bl
from attnbench.data import listops as lo
from attnbench.data.listops import ListOpsExample

MIN_LENGTH, MAX_LENGTH = 20, 150
SIZES = {"train": 300, "val": 60, "test": 40}


def _generate(seed: int, **overrides: int) -> dict[str, list[ListOpsExample]]:
    kwargs = {
        "seed": seed,
        "n_train": SIZES["train"],
        "n_val": SIZES["val"],
        "n_test": SIZES["test"],
        "min_length": MIN_LENGTH,
        "max_length": MAX_LENGTH,
    }
    kwargs.update(overrides)
    return lo.generate_listops(**kwargs)


@pytest.fixture(scope="module")
def data() -> dict[str, list[ListOpsExample]]:
    return _generate(seed=1234)


def _all(data: dict[str, list[ListOpsExample]]) -> list[ListOpsExample]:
    return [ex for split in ("train", "val", "test") for ex in data[split]]


def _reference_value(tokens: list[str] | tuple[str, ...]) -> int:
    """Independent stack evaluator over flat tokens (does not use the module's evaluators)."""
    stack: list[list[object]] = []
    done: list[int] = []
    for tok in tokens:
        if tok.startswith("["):
            stack.append([tok])
        elif tok == "]":
            op, *args = stack.pop()
            values = [int(a) for a in args]  # type: ignore[call-overload]
            if op == "[MIN":
                value = min(values)
            elif op == "[MAX":
                value = max(values)
            elif op == "[MED":
                ordered = sorted(values)
                n = len(ordered)
                mid = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
                value = int(mid)  # floor for non-negative values, as int(np.median(...))
            elif op == "[SM":
                value = sum(values) % 10
            else:
                raise AssertionError(f"unexpected operator {op}")
            (stack[-1] if stack else done).append(value)
        else:
            (stack[-1] if stack else done).append(int(tok))
    assert not stack and len(done) == 1, tokens
    return done[0]


# ------------------------------------------------------------------------ vocabulary


def test_vocab_layout() -> None:
    assert len(lo.VOCAB) == 17 and len(set(lo.VOCAB)) == 17
    assert lo.VOCAB[0] == lo.PAD == "[PAD]" and lo.VOCAB[1] == lo.CLS == "[CLS]"
    assert lo.OPERATORS == ("[MIN", "[MAX", "[MED", "[SM")
    digits = tuple(str(d) for d in range(10))
    assert lo.CLOSE == "]"
    assert digits == lo.DIGITS
    assert set(lo.VOCAB) == {lo.PAD, lo.CLS, *lo.OPERATORS, lo.CLOSE, *lo.DIGITS}
    assert lo.SPLIT_FILES == {
        "train": "basic_train.tsv",
        "val": "basic_val.tsv",
        "test": "basic_test.tsv",
    }


# ------------------------------------------------------------------------ generation


def test_labels_match_independent_evaluation(data: dict[str, list[ListOpsExample]]) -> None:
    examples = _all(data)
    for ex in examples:
        assert ex.label == _reference_value(ex.tokens), " ".join(ex.tokens)
    # the check is only meaningful if the data exercise many operators and labels
    labels = Counter(ex.label for ex in examples)
    assert len(labels) >= 8, labels
    ops = Counter(tok for ex in examples for tok in ex.tokens if tok in lo.OPERATORS)
    assert set(ops) == set(lo.OPERATORS)


def test_lengths_splits_and_uniqueness(data: dict[str, list[ListOpsExample]]) -> None:
    assert {k: len(v) for k, v in data.items()} == SIZES
    examples = _all(data)
    for ex in examples:
        assert MIN_LENGTH < len(ex.tokens) < MAX_LENGTH
        assert isinstance(ex.tokens, tuple) and all(isinstance(t, str) for t in ex.tokens)
        assert 0 <= ex.label <= 9
    strings = [" ".join(ex.tokens) for ex in examples]
    assert len(set(strings)) == len(strings)


def test_bounds_are_strict() -> None:
    # with max_length = min_length + 2 the only allowed length is min_length + 1
    out = lo.generate_listops(seed=0, n_train=20, n_val=0, n_test=0, min_length=9, max_length=11)
    assert {len(ex.tokens) for ex in out["train"]} == {10}


def test_same_seed_same_data_different_seed_different_data() -> None:
    state = random.getstate()
    a, b, c = _generate(seed=7), _generate(seed=7), _generate(seed=8)
    assert random.getstate() == state  # the global random state is never used
    assert a == b
    assert a["train"] != c["train"] and a["test"] != c["test"]
    # splits follow generation order: a larger request extends the train split's prefix
    bigger = _generate(seed=7, n_train=SIZES["train"] + 10)
    assert bigger["train"][: SIZES["train"]] == a["train"]


def test_generate_tree_follows_lra_rules() -> None:
    def check(tree: lo.Tree, depth: int, max_depth: int, max_args: int) -> int:
        if isinstance(tree, int):
            assert 0 <= tree <= 9
            return depth
        op, children = tree
        assert op in lo.OPERATORS and 2 <= len(children) <= max_args
        assert depth < max_depth
        return max(check(child, depth + 1, max_depth, max_args) for child in children)

    rng = random.Random(3)
    n_ops, n_leaf_roots, deepest = 0, 0, 0
    for _ in range(2000):
        tree, length = lo.generate_tree(rng, 1, 6, 4)
        assert length == len(lo.tree_tokens(tree))
        deepest = max(deepest, check(tree, 1, 6, 4))
        n_leaf_roots += isinstance(tree, int)
        n_ops += sum(tok in lo.OPERATORS for tok in lo.tree_tokens(tree))
    assert deepest == 6  # max depth is reached, never exceeded
    assert 0.70 < n_leaf_roots / 2000 < 0.80  # P(leaf) = 0.75 below max_depth
    assert all(isinstance(lo.generate_tree(rng, 1, 1, 10)[0], int) for _ in range(50))


def test_known_small_cases() -> None:
    assert lo.evaluate_tree(("[MED", (1, 2))) == 1
    assert lo.evaluate_tree(("[MED", (1, 2, 3, 4))) == 2
    assert lo.evaluate_tree(("[MED", (1, 4))) == 2  # floored mean, not the lower median
    assert lo.evaluate_tree(("[MED", (7, 0, 3))) == 3
    assert lo.evaluate_tree(("[SM", (9, 9, 5))) == 3
    assert lo.evaluate_tree(("[MIN", (4, 7, 2))) == 2
    assert lo.evaluate_tree(("[MAX", (4, 7, 2))) == 7
    tree: lo.Tree = ("[MAX", (2, 9, ("[MIN", (4, 7)), 0))
    tokens = ["[MAX", "2", "9", "[MIN", "4", "7", "]", "0", "]"]
    assert lo.tree_tokens(tree) == tokens
    assert lo.evaluate_tree(tree) == 9 == lo.evaluate_tokens(tokens) == _reference_value(tokens)
    assert lo.tree_tokens(5) == ["5"]
    with pytest.raises(ValueError, match="leaf"):
        lo.tree_tokens(("[MAX", (1, 12)))


# ------------------------------------------------------------------------ tokenization


def test_encode_decode_keeps_brackets(data: dict[str, list[ListOpsExample]]) -> None:
    close_id = lo.TOKEN_TO_ID[lo.CLOSE]
    op_ids = {lo.TOKEN_TO_ID[op] for op in lo.OPERATORS}
    for ex in _all(data):
        ids = lo.encode(ex.tokens)
        assert lo.decode(ids) == list(ex.tokens)
        assert len(ids) == len(ex.tokens)
        assert ids.count(close_id) == sum(i in op_ids for i in ids) > 0
        assert lo.PAD_ID not in ids and lo.CLS_ID not in ids
        assert all(0 <= i < len(lo.VOCAB) for i in ids)


def test_encode_decode_errors() -> None:
    with pytest.raises(ValueError, match=r"'\('; valid tokens: \[PAD\] \[CLS\]"):
        lo.encode(["[MAX", "(", "1", "]"])
    with pytest.raises(ValueError, match="17"):
        lo.decode([0, 17])
    with pytest.raises(ValueError, match="out of range"):
        lo.decode([-1])


# ------------------------------------------------------------------------ files

RELEASE_SNIPPET = (
    "Source\tTarget\r\n"
    "( ( ( [MAX 2 ) ( ( ( [MIN 9 ) 4 ) ] ) ) ] )\t4\r\n"
    "( ( ( ( [SM 2 ) 6 ) 5 ) ] )\t3\r\n"
    "( ( ( ( ( [MAX ( ( ( ( ( ( [MED 4 ) 6 ) 6 ) 0 ) 8 ) ] ) ) 6 ) 6 ) 0 ) ] )\t6\r\n"
)


def test_release_format_snippet_parses(tmp_path: Path) -> None:
    path = tmp_path / "basic_test.tsv"
    path.write_bytes(RELEASE_SNIPPET.encode())
    got = lo.read_tsv(path)
    assert [ex.tokens for ex in got] == [
        ("[MAX", "2", "[MIN", "9", "4", "]", "]"),
        ("[SM", "2", "6", "5", "]"),
        ("[MAX", "[MED", "4", "6", "6", "0", "8", "]", "6", "6", "0", "]"),
    ]
    assert [ex.label for ex in got] == [4, 3, 6]
    assert all(ex.label == _reference_value(ex.tokens) for ex in got)


def test_release_source_rendering() -> None:
    tokens = ["[MAX", "2", "[MIN", "9", "4", "]", "]"]
    assert lo.release_source(tokens) == "( ( ( [MAX 2 ) ( ( ( [MIN 9 ) 4 ) ] ) ) ] )"
    assert lo.release_source(["7"]) == "7"
    with pytest.raises(ValueError, match="unclosed"):
        lo.release_source(["[MAX", "2", "3"])


def test_tsv_round_trip(tmp_path: Path, data: dict[str, list[ListOpsExample]]) -> None:
    for split, name in lo.SPLIT_FILES.items():
        path = tmp_path / "lra" / name
        lo.write_tsv(path, data[split])
        assert lo.read_tsv(path) == data[split]
        lines = path.read_text().splitlines()
        assert lines[0] == "Source\tTarget" and len(lines) == len(data[split]) + 1
        source, label = lines[1].split("\t")
        assert source.startswith("( ") and int(label) == data[split][0].label
    assert sorted(p.name for p in (tmp_path / "lra").iterdir()) == sorted(
        lo.SPLIT_FILES.values()
    )  # no temporary files left behind
    empty = tmp_path / "empty.tsv"
    lo.write_tsv(empty, [])
    assert lo.read_tsv(empty) == []


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("Input\tLabel\n[MAX 1 2 ]\t2\n", ":1: bad header"),
        ("Source\tTarget\n[MAX 1 2 ]\tseven\n", ":2: label 'seven' is not an integer"),
        ("Source\tTarget\n[MAX 1 2 ]\t2\n[MIN 1 2 ]\t10\n", ":3: label 10 is outside"),
        ("Source\tTarget\n( ( [FOO 1 ) 2 ) ]\t2\n", ":2: unknown token.*'\\[FOO'"),
        ("Source\tTarget\n[MAX 1 2\t2\n", ":2: unbalanced"),
        ("Source\tTarget\n[MAX 1 2 ]\n", ":2: expected 2 tab-separated fields"),
    ],
)
def test_bad_files_raise_with_path_and_line(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        lo.read_tsv(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "basic_train.tsv"
    with pytest.raises(FileNotFoundError, match=r"basic_train\.tsv") as info:
        lo.read_tsv(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"min_length": 100, "max_length": 100}, "min_length=100, max_length=100"),
        ({"min_length": 100, "max_length": 101}, "no length L"),
        ({"min_length": 200, "max_length": 150}, "min_length=200"),
        ({"max_depth": 2}, "longest possible tree has 12 tokens"),
        ({"max_depth": 4, "max_args": 2, "min_length": 4, "max_length": 7}, "depth and arity"),
    ],
)
def test_impossible_bounds_fail_fast(overrides: dict[str, int], match: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match) as info:
        _generate(seed=0, **overrides)
    assert time.perf_counter() - start < 0.5
    assert "impossible" in str(info.value) and "\n" not in str(info.value)


def test_too_few_distinct_trees_fails() -> None:
    # only the ten single digits have length < 2
    with pytest.raises(ValueError, match="cannot generate 11 distinct"):
        lo.generate_listops(seed=0, n_train=11, n_val=0, n_test=0, min_length=0, max_length=2)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"n_train": -1}, "n_train must be >= 0"),
        ({"n_test": 1.5}, "n_test must be an int"),
        ({"max_args": 1}, "max_args must be >= 2"),
        ({"max_depth": 0}, "max_depth must be >= 1"),
        ({"min_length": -3}, "min_length must be >= 0"),
    ],
)
def test_invalid_arguments(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _generate(seed=0, **overrides)  # type: ignore[arg-type]


def test_empty_request_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    assert _generate(seed=0, n_train=0, n_val=0, n_test=0) == {"train": [], "val": [], "test": []}
    with_bar = _generate(seed=5, n_train=30, n_val=5, n_test=5, progress=True)
    assert "listops" in capsys.readouterr().err
    assert with_bar == _generate(seed=5, n_train=30, n_val=5, n_test=5)


# ------------------------------------------------------------------------ baseline


def _examples(labels: list[int]) -> list[ListOpsExample]:
    return [ListOpsExample(("[SM", str(label), "]"), label) for label in labels]


def test_majority_class_on_listops_labels() -> None:
    def labels(values: list[int]) -> list[int]:
        return [e.label for e in _examples(values)]

    train = labels([3, 3, 3, 1, 1, 7])
    assert bl.majority_class(train, labels([3, 1, 2, 3])) == 0.5
    assert bl.majority_class(train, labels([1, 1, 7])) == 0.0
    assert bl.majority_class(labels([5, 2, 2, 5]), labels([2, 5, 5])) == 1 / 3  # tie: 2
    with pytest.raises(ValueError, match="test"):
        bl.majority_class(train, [])
