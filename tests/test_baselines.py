"""Trivial baselines (attnbench.baselines) against independent computations, and every
registered task's baselines on tiny data, in the units of its primary metric."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier

from attnbench import baselines as bl
from attnbench.data import listops as lo
from attnbench.ngram import kneser_ney_nll
from attnbench.tasks.base import get_task, make_data_config, task_names


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------
# Majority rules
# ---------------------------------------------------------------------------------------
def test_majority_rules_against_a_direct_count() -> None:
    rng = random.Random(0)
    train = [rng.choice([0, 1, 1, 2, 3, 3, 3]) for _ in range(200)]
    test = [rng.randrange(4) for _ in range(50)]
    counts = Counter(train)
    majority = max(sorted(counts), key=lambda c: counts[c])
    assert bl.majority_label(train) == majority
    assert bl.majority_class(train, test) == sum(y == majority for y in test) / len(test)
    assert bl.majority_label([5, 2, 2, 5]) == 2  # ties: the smallest label
    assert bl.majority_class(np.array([5, 2, 2, 5]), [2, 5, 5]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        bl.majority_label([])

    keys = [rng.choice("abc") for _ in train]
    predictions = bl.grouped_majority(keys, train, ["a", "b", "c", "z"])
    for key, prediction in zip("abc", predictions, strict=False):
        group = Counter(y for k, y in zip(keys, train, strict=True) if k == key)
        assert prediction == max(sorted(group), key=lambda c: group[c])
    assert predictions[-1] == majority  # an unseen key gets the overall majority


def test_root_operator_rule_against_a_direct_count() -> None:
    data = lo.generate_listops(
        seed=3, n_train=300, n_val=1, n_test=100, min_length=4, max_length=40, max_depth=4,
        max_args=4,
    )  # fmt: skip
    train, test = data["train"], data["test"]
    per_operator: dict[str, Counter] = {}
    for e in train:
        first_operator = next(t for t in e.tokens if t.startswith("["))
        per_operator.setdefault(first_operator, Counter())[e.label] += 1
    rule = {op: max(sorted(c), key=lambda y: c[y]) for op, c in per_operator.items()}
    assert set(rule) == set(lo.OPERATORS)
    hits = sum(rule[next(t for t in e.tokens if t.startswith("["))] == e.label for e in test)
    assert lo.root_operator_baseline(train, test) == hits / len(test)
    assert lo.root_operator(("3",)) is None


# ---------------------------------------------------------------------------------------
# Bag-of-tokens features and linear models
# ---------------------------------------------------------------------------------------
def _dense_bags(docs: list[list[int]], vocab: int) -> np.ndarray:
    out = np.zeros((len(docs), vocab))
    for i, doc in enumerate(docs):
        for token, count in Counter(doc).items():
            out[i, token] = math.log(1 + count)
    return out


def test_bag_features_are_log_counts_and_pairs_their_three_combinations() -> None:
    rng = random.Random(1)
    docs_a = [[rng.randrange(7) for _ in range(rng.randrange(6))] for _ in range(20)]
    docs_b = [[rng.randrange(7) for _ in range(rng.randrange(6))] for _ in range(20)]
    a, b = _dense_bags(docs_a, 7), _dense_bags(docs_b, 7)
    np.testing.assert_allclose(bl.bag_features(docs_a, 7).to_dense().numpy(), a)
    pair = bl.pair_bag_features(docs_a, docs_b, 7).to_dense().numpy()
    np.testing.assert_allclose(pair, np.hstack([a + b, np.abs(a - b), a * b]))
    swapped = bl.pair_bag_features(docs_b, docs_a, 7).to_dense().numpy()
    np.testing.assert_allclose(pair, swapped)  # symmetric in the two sequences
    with pytest.raises(ValueError, match="token ids"):
        bl.bag_features([[7]], 7)


def _synthetic(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian classes, off-centre as counts are."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = rng.normal(size=(k, d))[y] + 1.5 * rng.normal(size=(n, d)) + 2.0
    return x, y


@pytest.mark.parametrize("c", [0.05, 1.0])
def test_multinomial_logistic_regression_matches_scikit_learn(c: float) -> None:
    x, y = _synthetic(150, 6, 3, seed=2)
    reference = LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(x, y)
    # scikit-learn minimises C·Σ CE + ½‖W‖²; ours mean CE + (l2/2)‖W‖²: l2 = 1/(C·n)
    ours = bl.fit_linear(x, y, 3, 1.0 / (c * len(x)), max_iter=2000, tolerance=1e-10)
    assert ours.predict(x).tolist() == reference.predict(x).tolist()
    np.testing.assert_allclose(ours.weight.numpy(), reference.coef_.T, atol=1e-5)
    np.testing.assert_allclose(ours.bias.numpy(), reference.intercept_, atol=1e-5)
    sparse = bl.fit_linear(
        torch.from_numpy(x).to_sparse(), y, 3, 1.0 / (c * len(x)), max_iter=2000, tolerance=1e-10
    )
    np.testing.assert_allclose(sparse.weight.numpy(), ours.weight.numpy(), atol=1e-8)


def test_two_class_softmax_is_binary_logistic_regression_at_twice_the_penalty() -> None:
    # With two softmax columns w1, w2 the penalty (‖w1‖² + ‖w2‖²)/2 is ‖w1 − w2‖²/4 at the
    # optimum (w2 = −w1), so l2 = 2/(C·n) is scikit-learn's binary LogisticRegression(C).
    x, y = _synthetic(120, 5, 2, seed=3)
    reference = LogisticRegression(C=0.2, tol=1e-10, max_iter=10_000).fit(x, y)
    ours = bl.fit_linear(x, y, 2, 2.0 / (0.2 * len(x)), max_iter=2000, tolerance=1e-10)
    assert ours.predict(x).tolist() == reference.predict(x).tolist()
    w = ours.weight.numpy()
    np.testing.assert_allclose(w[:, 1] - w[:, 0], reference.coef_[0], atol=1e-5)


def test_ridge_regression_matches_scikit_learn() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(80, 4)) + 1.0
    y = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 3.0 + rng.normal(size=80)
    # scikit-learn minimises ‖y − Xw − b‖² + α‖w‖²; ours the mean of half of it + (l2/2)‖w‖²
    reference = Ridge(alpha=0.1 * len(x)).fit(x, y)
    ours = bl.fit_linear(x, y, 1, 0.1, max_iter=2000, tolerance=1e-12)
    np.testing.assert_allclose(ours.weight.numpy()[:, 0], reference.coef_, atol=1e-6)
    np.testing.assert_allclose(ours.predict(x), reference.predict(x), atol=1e-6)


def test_selection_keeps_the_strength_best_on_validation() -> None:
    x, y = _synthetic(300, 20, 3, seed=5)
    x_train, y_train, x_val, y_val = x[:120], y[:120], x[120:], y[120:]
    grid = (10.0, 1e-1, 1e-3)
    val_scores = {
        l2: bl.accuracy(bl.fit_linear(x_train, y_train, 3, l2, max_iter=500).predict(x_val), y_val)
        for l2 in grid
    }
    assert len(set(val_scores.values())) > 1  # the choice matters on this problem
    chosen = bl.select_linear(x_train, y_train, x_val, y_val, 3, grid=grid)
    assert val_scores[chosen.l2] == max(val_scores.values())
    strongest = bl.select_linear(x_train, y_train, x_val, y_val, 3, grid=grid, score=lambda p, t: 0)
    assert strongest.l2 == 10.0  # ties keep the strongest penalty


# ---------------------------------------------------------------------------------------
# Kneser–Ney
# ---------------------------------------------------------------------------------------
def test_kneser_ney_bigram_perplexity_by_hand() -> None:
    # V = 4 (0 = [BOS], 1 = a, 2 = b, 3 = c); a 10-token training stream, [BOS] first.
    train = [0, 1, 2, 1, 2, 3, 1, 2, 1, 3]
    test = [0, 1, 3, 2, 2]
    # Bigrams ending at positions 1..9: (0,1) (1,2) (2,1) (1,2) (2,3) (3,1) (1,2) (2,1) (1,3)
    # raw counts c2: (0,1)=1 (1,2)=3 (2,1)=2 (2,3)=1 (3,1)=1 (1,3)=1: n1=4, n2=1, D2 = 4/6
    # continuation counts c1 (distinct left neighbours): a: {0,2,3}=3, b: {1}=1, c: {2,1}=2
    # n1=1, n2=1: D1 = 1/3; c1 total 6 with 3 types:
    #   P1(w) = max(c1(w) − 1/3, 0)/6 + (1/3)·3/6 · 1/4
    #   P1(a) = (8/3)/6 + 1/24 = 35/72, P1(b) = (2/3)/6 + 1/24 = 11/72, P1(c) = 23/72
    # P2(w|h) = max(c2(hw) − 2/3, 0)/c2(h·) + (2/3)·N(h·)/c2(h·)·P1(w), with
    # c2(0·)=1, N=1; c2(1·)=4, N=2; c2(2·)=3, N=2; c2(3·)=1, N=1:
    #   P(a|0) = (1/3)/1 + (2/3)·1·35/72     = 71/108
    #   P(c|a) = (1/3)/4 + (2/3)·(2/4)·23/72 = 41/216
    #   P(b|c) = 0       + (2/3)·1·11/72     = 11/108
    #   P(b|b) = 0       + (2/3)·(2/3)·11/72 = 11/162
    probs = [Fraction(71, 108), Fraction(41, 216), Fraction(11, 108), Fraction(11, 162)]
    nll = kneser_ney_nll(train, test, 2, 4)
    np.testing.assert_allclose(nll, [-math.log(p) for p in probs], rtol=1e-12)
    perplexity = math.prod(float(1 / p) for p in probs) ** (1 / 4)
    assert math.exp(nll.mean()) == pytest.approx(perplexity, rel=1e-12)  # ≈ 7.00


def _reference_kneser_ney(train: list[int], test: list[int], order: int, v: int) -> list[float]:
    """Interpolated Kneser–Ney written directly from its definition, with dictionaries."""
    pad = max(order - 2, 0)
    tr, te = [train[0]] * pad + train, [test[0]] * pad + test
    first = pad + 1
    counts = {order: Counter(tuple(tr[i - order + 1 : i + 1]) for i in range(first, len(tr)))}
    for k in range(order - 1, 0, -1):
        wider = {tuple(tr[i - k : i + 1]) for i in range(first, len(tr))}
        counts[k] = Counter(gram[1:] for gram in wider)

    def discount(k: int) -> float:
        n1 = sum(c == 1 for c in counts[k].values())
        n2 = sum(c == 2 for c in counts[k].values())
        return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5

    def p(k: int, h: tuple, w: int) -> float:
        if k == 0:
            return 1 / v
        lower = p(k - 1, h[1:], w)
        following = {g: c for g, c in counts[k].items() if g[:-1] == h}
        total = sum(following.values())
        if total == 0:
            return lower
        d = discount(k)
        return max(counts[k][(*h, w)] - d, 0) / total + d * len(following) / total * lower

    return [-math.log(p(order, tuple(te[i - order + 1 : i]), te[i])) for i in range(first, len(te))]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_kneser_ney_matches_a_direct_implementation_and_normalises(order: int) -> None:
    rng = random.Random(order)
    v = 6
    train = [0] + [rng.choice([1, 1, 2, 3, 3, 3, 4]) for _ in range(300)]
    test = [0] + [rng.choice([1, 2, 3, 4, 5]) for _ in range(60)]  # 5: never in training
    ours = kneser_ney_nll(train, test, order, v)
    np.testing.assert_allclose(ours, _reference_kneser_ney(train, test, order, v), rtol=1e-10)
    for history in ([0], [3, 3], [1, 5, 2]):  # seen, and unseen histories
        total = sum(
            math.exp(-kneser_ney_nll(train, [0, *history, w], order, v)[-1]) for w in range(v)
        )
        assert total == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------------------
# Translation
# ---------------------------------------------------------------------------------------
def test_lexical_translator_by_dice_coefficient() -> None:
    sources = ["the cat", "the dog", "a cat", "a dog", "God spoke"]
    targets = ["el gato", "el perro", "un gato", "un perro", "Dios habló"]
    lexicon = bl.LexicalTranslator.fit(sources, targets)
    # Dice(the, el) = 2·2/(2+2) = 1 beats Dice(the, gato) = 2·1/(2+2) = 1/2
    assert lexicon.translate("the dog") == "El perro"
    assert lexicon.translate("a bird") == "Un bird"  # unseen words are copied
    assert lexicon.translate("god") == "Dios"  # matched in lower case, written as in training

    # Dice(x, ".") = 1 > Dice(x, a) = 2·1/(2+1), but words only become words; the tie
    # between "a" and "b" goes to the first in sorted order. "." never occurs in a source.
    lexicon = bl.LexicalTranslator.fit(["x a", "x b"], ["A .", "B ."])
    assert lexicon.table == {"x": "A", "a": "A", "b": "B"}
    assert lexicon.translate("b x .") == "B A."
    assert bl.detokenize(["¿", "qué", "?", "(", "sí", ")", "."]) == "¿qué? (sí)."


# ---------------------------------------------------------------------------------------
# k-NN and marker positions
# ---------------------------------------------------------------------------------------
def test_knn_matches_scikit_learn_on_untied_data() -> None:
    rng = np.random.default_rng(6)
    x_train, x_test = rng.normal(size=(200, 3)), rng.normal(size=(50, 3))
    y_train = (x_train[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)
    for k in (1, 5, 15):
        reference = KNeighborsClassifier(n_neighbors=k).fit(x_train, y_train).predict(x_test)
        assert bl.knn_predict(x_train, y_train, x_test, k).tolist() == reference.tolist()
    # integer points tie often: equal distances go to the earlier training point
    a, b = rng.integers(0, 3, size=(60, 2)), rng.integers(0, 3, size=(20, 2))
    d2 = ((b[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    labels = np.arange(60) % 3
    for k in (1, 4, 7):
        nearest = np.argsort(d2, axis=1, kind="stable")[:, :k]
        votes = np.stack([np.bincount(labels[row], minlength=3) for row in nearest])
        assert bl.knn_predict(a, labels, b, k).tolist() == votes.argmax(axis=1).tolist()


def _marker_image(side: int, p: tuple[int, int], q: tuple[int, int]) -> np.ndarray:
    image = np.zeros((side, side), dtype=np.uint8)
    image[1, 1 : side - 1] = 191  # a dash in another gray level is not a marker
    for y, x in (p, q):
        image[y - 1 : y + 2, x] = 255  # a plus-shaped disc of radius 1.5, centre (y, x)
        image[y, x - 1 : x + 2] = 255
    return image


def test_blob_centroids_find_the_two_markers() -> None:
    images = np.stack(
        [
            _marker_image(16, (4, 12), (10, 3)),
            _marker_image(16, (7, 7), (7, 9)),  # touching: one blob, its centre twice
            np.zeros((16, 16), dtype=np.uint8),  # no marker: the image centre twice
        ]
    )
    np.testing.assert_allclose(
        bl.blob_centroids(images, 255),
        [[4, 12, 10, 3], [7, 8, 7, 8], [7.5, 7.5, 7.5, 7.5]],
    )


def test_a_marker_position_classifier_learns_a_positional_cue() -> None:
    rng = np.random.default_rng(7)
    images, labels = [], []
    while len(images) < 400:
        p, q = (tuple(int(v) for v in rng.integers(3, 13, size=2)) for _ in range(2))
        if max(abs(p[0] - q[0]), abs(p[1] - q[1])) < 3:
            continue  # keep the two markers apart
        images.append(_marker_image(16, p, q))
        labels.append(int(math.dist(p, q) < 6))  # the cue: close markers are "connected"
    centres = bl.blob_centroids(np.stack(images), 255)
    dy, dx = centres[:, 2] - centres[:, 0], centres[:, 3] - centres[:, 1]
    features = np.column_stack([centres, np.abs(dy), np.abs(dx), np.hypot(dy, dx)])
    y = np.array(labels)
    assert 0.2 < y.mean() < 0.8
    predictions, k = bl.select_knn(
        features[:250], y[:250], features[250:300], y[250:300], features[300:]
    )
    assert bl.accuracy(predictions, y[300:]) >= 0.9
    assert k in bl.K_GRID


# ---------------------------------------------------------------------------------------
# Computed once with the data
# ---------------------------------------------------------------------------------------
def test_saved_baselines_are_read_back_unless_the_code_changed(tmp_path: Path, monkeypatch) -> None:
    task = _tiny_task("lm", tmp_path)
    computed = bl.save_baselines(task, tmp_path)

    def refit() -> dict[str, float]:
        raise AssertionError("computed again")

    monkeypatch.setattr(task, "baselines", refit)
    assert bl.task_baselines(task, tmp_path) == computed
    saved = json.loads((tmp_path / bl.BASELINES_FILE).read_text())
    saved["fingerprint"] = "0" * 64  # as if saved by other code
    (tmp_path / bl.BASELINES_FILE).write_text(json.dumps(saved))
    monkeypatch.setattr(task, "baselines", lambda: {"fresh": 1.0})
    assert bl.task_baselines(task, tmp_path) == {"fresh": 1.0}
    (tmp_path / bl.BASELINES_FILE).unlink()
    assert bl.task_baselines(task, tmp_path) == {"fresh": 1.0}


# ---------------------------------------------------------------------------------------
# Every registered task, on tiny data
# ---------------------------------------------------------------------------------------
TINY: dict[str, dict] = {
    "listops": {"n_train": 120, "n_val": 30, "n_test": 30, "min_length": 5, "max_length": 40,
                "max_depth": 4, "max_args": 4},
    "text": {"source": "bundled", "max_length": 64, "n_train": 100, "n_val": 20, "n_test": 20},
    "retrieval": {"source": "bundled", "max_length": 32, "n_train": 100, "n_val": 20,
                  "n_test": 20},
    "image": {"source": "bundled", "pool": 4, "n_train": 100, "n_val": 30, "n_test": 30},
    "pathfinder": {"resolution": 16, "difficulty": "baseline", "n_train": 40, "n_val": 10,
                   "n_test": 10},
    "pathx": {"resolution": 16, "difficulty": "baseline", "n_train": 40, "n_val": 10,
              "n_test": 10},
    "translation": {"source": "bundled", "src_lang": "en", "tgt_lang": "es", "vocab_size": 300,
                    "max_length": 24, "max_words": 10, "n_train": 150, "n_val": 20,
                    "n_test": 20},
    "wordnet-lex": {"n_train": 150, "n_val": 30, "n_test": 30, "vocab_size": 300,
                    "max_length": 24},
    "bible-paraphrase": {"n_train": 150, "n_val": 30, "n_test": 30, "vocab_size": 300,
                         "max_length": 32},
    "bible-bshift": {"n_train": 150, "n_val": 30, "n_test": 30, "vocab_size": 300,
                     "max_length": 32},
    "bible-shuffle": {"n_train": 150, "n_val": 30, "n_test": 30, "vocab_size": 300,
                      "max_length": 32},
    "lm": {"source": "novels", "tokenizer": "char", "window": 16, "stride": 8,
           "max_train_chars": 5000, "max_val_chars": 500, "max_test_chars": 500},
    "mqar": {"vocab_size": 64, "train_settings": [[16, 2], [24, 4]], "n_train": 40,
             "n_val": 8, "n_test": 20},
    "mad-in-context-recall": {"seq_len": 16, "n_train": 40, "n_val": 8, "n_test": 20},
    "mad-fuzzy-recall": {"seq_len": 24, "n_train": 40, "n_val": 8, "n_test": 20},
    "mad-noisy-recall": {"seq_len": 16, "n_train": 40, "n_val": 8, "n_test": 20},
    "mad-selective-copy": {"seq_len": 16, "num_tokens_to_copy": 4, "n_train": 40, "n_val": 8,
                           "n_test": 20},
    "mad-compression": {"seq_len": 12, "n_train": 40, "n_val": 8, "n_test": 20},
    "mad-memorization": {"seq_len": 12, "vocab_size": 32, "n_train": 40, "n_val": 8,
                         "n_test": 20},
}  # fmt: skip
GLUE = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
#: the range of each primary metric (its units): a baseline outside it is in other units
RANGES = {
    "accuracy": (0.0, 1.0),
    "accuracy_matched": (0.0, 1.0),
    "f1_accuracy": (0.0, 1.0),
    "mcc": (-1.0, 1.0),
    "pearson_spearman": (-1.0, 1.0),
    "bleu": (0.0, 100.0),
    "perplexity": (1.0, math.inf),
}
#: what each task declares, beyond its constant predictors
EXPECTED = {
    "listops": {"majority_class", "bag_of_tokens", "root_operator"},
    "text": {"majority_class", "bag_of_tokens"},
    "retrieval": {"majority_class", "bag_of_tokens"},
    "image": {"majority_class", "bag_of_tokens", "linear_pixels"},
    "pathfinder": {"majority_class", "marker_positions"},
    "pathx": {"majority_class", "marker_positions"},
    "translation": {"copy_source", "word_by_word"},
    "lm": {"uniform", "unigram", "kn_bigram", "kn_trigram"},
    "mqar": {"majority_target", "bigram", "context_value"},
    "mad-in-context-recall": {"majority_target", "bigram"},
    "mad-fuzzy-recall": {"majority_target", "bigram"},
    "mad-noisy-recall": {"majority_target", "bigram"},
    "mad-selective-copy": {"majority_target", "bigram"},
    # the current token decides the answer here: a per-token rule is the task itself
    "mad-compression": {"majority_target"},
    "mad-memorization": {"majority_target"},
}


def _tiny_task(name: str, out: Path):
    cls = get_task(name)
    if name in GLUE:
        from test_glue import write_glue_files

        files = write_glue_files(name, out / "source")
        data = {"hf_path": "json", "data_files": files, "vocab_size": 300, "max_length": 32}
    else:
        data = TINY[name]
    task = cls(make_data_config(cls, data))
    task.prepare(out / "data")
    task.load(out / "data")
    return task


def test_every_registered_task_is_covered() -> None:
    assert set(task_names()) == set(TINY) | set(GLUE)


@pytest.mark.parametrize("name", [*TINY, *GLUE])
def test_task_baselines_are_finite_and_in_the_metric_units(name: str, tmp_path: Path) -> None:
    task = _tiny_task(name, tmp_path)
    baselines = task.baselines()
    low, high = RANGES[task.metric]
    assert baselines
    for key, value in baselines.items():
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", key)
        assert isinstance(value, float) and math.isfinite(value)
        assert low <= value <= high, (key, value)
    assert baselines.keys() >= EXPECTED.get(name, {"bag_of_tokens"})
    if name == "translation":  # copying the source is sacrebleu's BLEU of the source
        test = task.splits["test"]
        bleu = sacrebleu.corpus_bleu([p.source for p in test], [[p.reference for p in test]])
        assert baselines["copy_source"] == pytest.approx(bleu.score)
    if name == "lm":  # the n-grams are scored on exactly the tokens the model is
        nll = kneser_ney_nll(task.splits["train"], task.splits["test"], 3, task.vocab_size())
        assert len(nll) == task.split_size("test")
        assert baselines["kn_trigram"] == pytest.approx(math.exp(nll.mean()))
        assert baselines["kn_trigram"] < baselines["kn_bigram"] < baselines["unigram"]
    if name in EXPECTED and "majority_target" in EXPECTED[name]:
        assert baselines.keys() == EXPECTED[name]  # no per-token rule where it is the answer
        test_tokens, test_targets = task.scored("test")
        train_tokens, train_targets = task.scored("train")
        votes: dict[int, dict[int, int]] = {}
        for token, target in zip(train_tokens.tolist(), train_targets.tolist(), strict=True):
            votes.setdefault(token, {}).setdefault(target, 0)
            votes[token][target] += 1
        counts = np.bincount(train_targets)
        fallback = int(np.argmax(counts))
        rule = {t: min(v, key=lambda y: (-v[y], y)) for t, v in votes.items()}
        guesses = [rule.get(t, fallback) for t in test_tokens.tolist()]
        assert baselines["majority_target"] == pytest.approx(np.mean(test_targets == fallback))
        if "bigram" in baselines:
            assert baselines["bigram"] == pytest.approx(np.mean(np.array(guesses) == test_targets))
    if name == "mqar":  # a uniform guess among the example's K values: 1/K per query
        settings = [2, 4]  # the test settings' K (= the training settings here)
        data = task.splits["test"]
        per_query = [
            1 / settings[s]
            for s, row in zip(data.setting, data.targets, strict=True)
            for t in row
            if t != -100
        ]
        assert baselines["context_value"] == pytest.approx(float(np.mean(per_query)))
    if name == "listops":
        train, test = (
            [lo.ListOpsExample(tuple(lo.decode(ids)), y) for ids, y in task.splits[s]]
            for s in ("train", "test")
        )
        assert baselines["root_operator"] == lo.root_operator_baseline(train, test)
