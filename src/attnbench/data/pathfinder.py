"""Pathfinder and Path-X: a seeded generator of dashed-contour images and an LRA release reader.

The task comes from Linsley et al. 2018, "Learning long-range spatial dependencies with
horizontal gated recurrent units" (the *Pathfinder challenge*), and is the image-as-sequence
task of the Long Range Arena (Tay et al. 2021, "Long Range Arena: A Benchmark for Efficient
Transformers"): an image holds two paths made of short dashes ("paddles"), a few shorter
distractor paths, and two endpoint markers. The label says whether both markers sit on the
same path. LRA flattens 32×32 images (Pathfinder, 1,024 pixels) or 128×128 images (Path-X,
16,384 pixels) into pixel sequences.

Generation (:func:`draw_sample`), after the Pathfinder generator (``drewlinsley/pathfinder``,
``snakes2.py``), with the markers placed first
    A path is a chain of dashes: a dash is a straight, 8-connected run of ``dash_length``
    pixels; the next dash starts ``gap`` blank pixels further on along a heading turned by at
    most ``max_turn`` degrees. Paths do not touch or cross themselves. A path that runs into a
    wall or another path backs up and tries other turns (a bounded depth-first search); a
    layout that fails is redrawn. The two markers come first, whatever the label: a path ``t``
    of ``contour_length`` dashes grows from a point ``p`` in the middle half of the image, and
    the markers go on its tips ``p`` and ``q``. Then both target layouts are built: the
    positive one keeps ``t`` and adds a second path of ``contour_length`` dashes from a random
    free pixel; the negative one grows instead one such path from ``p`` (kept away from the
    marker on ``q``) and one from ``q`` (kept away from the first path and the marker on
    ``p``). Only then does the label pick a layout; a failure of either layout redraws both,
    so the label cannot change where the markers are (see *The marker cue* below). Finally
    ``n_distractors`` shorter paths (``distractor_length`` dashes) fill the free space; one
    that finds no room is left out. Pixels are 0 (background), ``dash_value`` (dashes) and
    ``marker_value`` (markers); there is no anti-aliasing, so connectivity is exact. The two
    markers are the two 8-connected components of ``marker_value`` pixels: digital discs of
    radius ``marker_radius + 0.5`` centred on the tips ``p`` and ``q`` (the discs' centroids).

    The geometry makes the label checkable from the pixels alone: the last pixel of a dash and
    the first of the next are at most ``link_max = gap + 1`` apart (Chebyshev distance), while
    pixels of *different* paths are at least ``separation = gap + 2`` apart, markers included
    (a marker belongs to the path whose tip it covers). Dilating the non-zero pixels by a
    ``link_max`` × ``link_max`` square joins exactly the pixels at most ``link_max`` apart, so
    each path merges with its own markers and with nothing else: the two markers lie in one
    8-connected component iff the label is positive. The tests check this with
    :mod:`scipy.ndimage` on the drawn images.

    Difficulty follows the Pathfinder releases: ``baseline`` (``curv_baseline``, 6 dashes per
    path), ``intermediate`` (``curv_contour_length_9``) and ``hard`` (``curv_contour_length_14``,
    the LRA setting); distractor paths are ``contour_length // 3`` dashes long and there are
    ``budget // distractor_length`` of them, with the LRA budgets 20 (32×32), 22 (64×64) and
    35 (128×128). Dash length, gap, marker radius and turn limit per resolution are in
    :data:`RESOLUTION_DEFAULTS`; the 32×32 row follows the LRA release (paddle length 2,
    margin 1). 16×16 uses single-pixel dashes (dotted paths) and fits
    ``baseline`` and ``intermediate`` only. What differs from the original: an explicit seed,
    1-pixel-thin dashes without anti-aliasing, a turn limit instead of the original's
    "continuity" sampling, hard separation rules, no image rejected because of its label
    (balanced classes by construction), and the markers placed before the paths (the
    original's ``seed_distance``, how far apart its two target paths start, has no
    counterpart).

The marker cue, and why it is gone
    The original grows both target paths first, from start tips ``seed_distance`` apart, and
    then marks the start and end of one path (positive) or the start of one and the end of
    the other (negative). The two markers are then not placed alike in the two classes: with
    that construction here, gradient-boosted trees on the two marker positions alone (4,000
    training images) reached about 77 % at 16×16 ``baseline``, 64 % at 20×20 ``intermediate``
    and 58 % at 32×32 ``hard``, so a model could beat chance without tracing paths. (How
    large the cue is in the LRA release images was not measured.) Here the marker pair is
    drawn before the label is used and both layouts are required to succeed, so for a given
    random stream the two labels give the *same* marker pixels, and the marker positions and
    their distance have exactly the same distribution in both classes; the tests check that
    classifiers on the marker coordinates stay at chance. What remains is the difference the
    task is about: in a positive image ink runs between the markers, in a negative one a
    path leaves each marker. Simple ink statistics around the markers (ink within a few
    pixels of each, spread of the ink away from them) still give gradient-boosted trees about
    63 % at 16×16 ``baseline`` and 57 % at 20×20 ``intermediate`` (6,000 training images).

Determinism
    Image ``i`` of split ``s`` is drawn from its own :class:`random.Random` stream, seeded
    from ``numpy.random.SeedSequence((seed, s, i))``, given its label; the labels of a split
    are a seeded permutation of exactly ``n // 2`` positives and ``n - n // 2`` negatives. The
    same seed gives identical images (Python's Mersenne Twister; only a C library whose
    ``sin``/``cos`` differ in the last bit could move a rounded pixel).

LRA release files (:func:`list_lra_release`, :func:`read_png`)
    The release (``lra_release.gz``) holds ``pathfinder{32,64,128,256}/<difficulty dir>/`` with
    ``imgs/<batch>/sample_<i>.png`` (8-bit grayscale) and ``metadata/<batch>.npy``. Despite the
    suffix, the metadata files LRA shipped are read as *text* by LRA's own TFDS builder
    (``lra_benchmarks/data/pathfinder.py``: ``read_file(...).decode('utf-8').split('\\n')``,
    then ``split(' ')``) and by the S4 loader (``state-spaces/s4``, ``src/dataloaders/lra.py``):
    one image per line, space-separated columns, as written by ``snakes2.accumulate_meta``::

        0 subpath (e.g. imgs/0)   1 file name (sample_0.png)   2 image number   3 label (0/1)
        4 continuity   5 contour length   6 distractor length   7 paddle length
        8 paddle thickness   9 paddle margin   10 number of paddle contrasts

    The generator script itself saves the rows with ``numpy.save`` (a string array), so a
    binary ``.npy`` file with the same columns is read too. LRA drops empty image files (its
    pipeline filters zero-length PNGs; S4 blacklists ``pathfinder32/curv_baseline/imgs/0/
    sample_172.png``); so does :func:`list_lra_release`, and it reports how many. LRA splits each
    difficulty 80/10/10 (160K/20K/20K of 200K) by position; here the rows (metadata files in
    numeric order, rows in file order) are permuted with the data seed before the split.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

__all__ = [
    "DIFFICULTIES",
    "DISTRACTOR_BUDGET",
    "LRA_DIRS",
    "PIXEL_OFFSET",
    "RESOLUTION_DEFAULTS",
    "SPLITS",
    "LraRow",
    "PathfinderSpec",
    "balanced_labels",
    "draw_sample",
    "generate_split",
    "list_lra_release",
    "lra_spec",
    "read_metadata",
    "read_png",
    "write_split",
]

SPLITS = ("train", "val", "test")
# Target path length (dashes) per difficulty: Linsley et al. 2018 used 6, 9 and 14 paddles.
DIFFICULTIES = {"baseline": 6, "intermediate": 9, "hard": 14}
# The directory of each difficulty in the LRA release.
LRA_DIRS = {
    "baseline": "curv_baseline",
    "intermediate": "curv_contour_length_9",
    "hard": "curv_contour_length_14",
}
# Pixel tokens: value + PIXEL_OFFSET, so 0 = [PAD] and 1 = [CLS] stay free (258 tokens in all).
PIXEL_OFFSET = 2

# resolution -> (dash_length, gap, marker_radius, max_turn); a resolution between two rows takes
# the row of the largest resolution not above it. 32: the LRA release (paddle length 2, margin
# 1); 64 and 128: LRA's marker radii (2.5, 3) with dashes scaled up; 16: a reduced setting for
# CPU profiles. Smaller images need sharper turns for a path to fit.
RESOLUTION_DEFAULTS: dict[int, tuple[int, int, int, float]] = {
    16: (1, 1, 1, 60.0),
    32: (2, 1, 1, 45.0),
    64: (3, 1, 2, 45.0),
    128: (5, 2, 3, 40.0),
    256: (8, 3, 5, 30.0),
}
# Distractor budget (total distractor dashes) per resolution: LRA 20 at 32, 22 at 64, 35 at 128.
DISTRACTOR_BUDGET = {16: 8, 32: 20, 64: 22, 128: 35, 256: 30}

_CANDIDATES = 4  # headings tried per dash before backing up
_DISTRACTOR_TRIES = 6  # starts tried per distractor before it is left out
_TARGET_TRIES = 3  # searches for a target path (or starts of one) before a redraw
_DISTRACTOR_BUDGET = 3  # dashes tried per dash of a distractor (they fail fast: only filling)
_BUDGET = 12  # dashes tried per dash of a target path (depth-first search budget)


@dataclass(frozen=True)
class PathfinderSpec:
    """Geometry of one Pathfinder image (all lengths in pixels); defaults: LRA 32×32, hard."""

    resolution: int = 32  # image side
    contour_length: int = 14  # dashes per target path (6 / 9 / 14: baseline / intermediate / hard)
    distractor_length: int = 4  # dashes per distractor path (contour_length // 3 in the release)
    n_distractors: int = 5  # distractor paths tried (20 // distractor_length at 32×32)
    dash_length: int = 2  # pixels per dash, along the major axis
    gap: int = 1  # blank pixels between consecutive dashes, along the major axis
    max_turn: float = 45.0  # largest heading change between dashes (degrees, at most 60)
    marker_radius: int = 1  # endpoint marker: disc of radius marker_radius + 0.5
    padding: int = 1  # border kept free of dashes
    dash_value: int = 191  # gray level of dashes
    marker_value: int = 255  # gray level of markers (distinct from dash_value)
    max_attempts: int = 500  # target-path layouts tried per image before giving up

    def __post_init__(self) -> None:
        positive = (
            "resolution",
            "contour_length",
            "distractor_length",
            "dash_length",
            "gap",
            "marker_radius",
            "max_attempts",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"pathfinder {name} must be positive, got {getattr(self, name)}")
        if self.resolution < 16:
            raise ValueError(f"pathfinder resolution must be at least 16, got {self.resolution}")
        if self.n_distractors < 0:
            raise ValueError(f"pathfinder n_distractors must be >= 0, got {self.n_distractors}")
        if not 0 < self.max_turn <= 60:  # sharper turns could fold a dash onto the one before
            raise ValueError(f"pathfinder max_turn must be in (0, 60] degrees, got {self.max_turn}")
        if self.padding < 0:
            raise ValueError(f"pathfinder padding must be >= 0, got {self.padding}")
        for name in ("dash_value", "marker_value"):
            if not 1 <= getattr(self, name) <= 255:
                raise ValueError(f"pathfinder {name} must be in 1..255, got {getattr(self, name)}")
        if self.dash_value == self.marker_value:
            raise ValueError("pathfinder dash_value and marker_value must differ")

    @property
    def link_max(self) -> int:
        """Chebyshev distance from the end of a dash to the start of the next: at most this."""
        return self.gap + 1

    @property
    def separation(self) -> int:
        """Smallest Chebyshev distance between pixels of different paths (link_max + 1)."""
        return self.gap + 2


def lra_spec(resolution: int = 32, difficulty: str = "hard", **overrides: object) -> PathfinderSpec:
    """The LRA-like spec for a resolution and difficulty (``baseline|intermediate|hard``)."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(
            f"pathfinder difficulty {difficulty!r}; valid choices: {', '.join(DIFFICULTIES)}"
        )
    if not isinstance(resolution, int) or resolution < 16:
        raise ValueError(f"pathfinder resolution must be an integer >= 16, got {resolution!r}")
    row = max(r for r in RESOLUTION_DEFAULTS if r <= resolution)
    dash_length, gap, marker_radius, max_turn = RESOLUTION_DEFAULTS[row]
    contour_length = DIFFICULTIES[difficulty]
    distractor_length = max(1, contour_length // 3)
    spec = PathfinderSpec(
        resolution=resolution,
        contour_length=contour_length,
        distractor_length=distractor_length,
        n_distractors=DISTRACTOR_BUDGET[row] // distractor_length,
        dash_length=dash_length,
        gap=gap,
        max_turn=max_turn,
        marker_radius=marker_radius,
        padding=marker_radius,
    )
    return replace(spec, **overrides) if overrides else spec


# ---------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------
class _NoRoom(Exception):
    """A path could not be placed (the caller retries or leaves it out)."""


Pixel = tuple[int, int]  # (y, x)


def _disc(radius: int) -> list[Pixel]:
    """Offsets of a digital disc: dy² + dx² <= (radius + 0.5)²."""
    span = range(-radius, radius + 1)
    return [(dy, dx) for dy in span for dx in span if dy * dy + dx * dx <= (radius + 0.5) ** 2]


class _Canvas:
    """One image being drawn, paths one at a time (small pure-Python loops: fast at this size).

    ``blocked`` marks every pixel within ``separation - 1`` (Chebyshev) of a finished path or a
    marker, so a path that stays off it keeps its distance from everything drawn before. The
    growing path keeps ``separation`` from its own dashes but the last two (``old`` counts the
    widened bounding boxes of those dashes); the link to the last dash is ``gap + 1`` by
    construction, and the turn limit (at most 60 degrees) keeps a new dash clear of the one
    before, so paths do not touch or cross themselves.
    """

    def __init__(self, spec: PathfinderSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self.size = spec.resolution
        self.blocked = bytearray(spec.resolution**2)  # row-major, 1 = blocked
        self.old = np.zeros(spec.resolution**2, dtype=np.int16)  # row-major (see _stamp_old)
        self.lo = spec.padding
        self.hi = spec.resolution - 1 - spec.padding
        self.keep = spec.separation - 1  # blocking radius around drawn pixels
        self.turn = math.radians(spec.max_turn)
        self.disc = _disc(spec.marker_radius)
        self.budget = 0

    # -- occupancy ---------------------------------------------------------------------------
    def block(self, pixels: list[Pixel]) -> None:
        """Mark every pixel within ``keep`` (Chebyshev) of ``pixels``."""
        r, n, blocked = self.keep, self.size, self.blocked
        for y, x in pixels:
            x0, x1 = max(x - r, 0), min(x + r + 1, n)
            ones = b"\x01" * (x1 - x0)
            for v in range(max(y - r, 0), min(y + r + 1, n)):
                blocked[v * n + x0 : v * n + x1] = ones

    def _stamp_old(self, dash: list[Pixel], delta: int) -> None:
        """Add ``delta`` around ``dash`` (its bounding box widened by ``keep``) in ``old``."""
        r, n = self.keep, self.size
        ys = [y for y, _ in dash]
        xs = [x for _, x in dash]
        grid = self.old.reshape(n, n)
        grid[max(min(ys) - r, 0) : max(ys) + r + 1, max(min(xs) - r, 0) : max(xs) + r + 1] += delta

    def clear(self) -> None:
        """Unblock every pixel (start over on an empty image)."""
        self.blocked = bytearray(self.size**2)

    def disc_at(self, tip: Pixel) -> list[Pixel]:
        return [(tip[0] + dy, tip[1] + dx) for dy, dx in self.disc]

    def tip_clear(self, tip: Pixel) -> bool:
        """A marker disc on ``tip`` stays inside the image and off ``blocked``."""
        n = self.size
        return all(
            0 <= y < n and 0 <= x < n and not self.blocked[y * n + x] for y, x in self.disc_at(tip)
        )

    # -- paths ---------------------------------------------------------------------------------
    def _next_dash(self, path: list[list[Pixel]], level: list) -> tuple[list[Pixel], float] | None:
        """The next valid dash from ``level`` = [last pixel, heading, spread, offset, tries left].

        The heading is drawn uniformly within ``spread`` of ``heading``; the dash starts
        ``offset`` pixels on from the last pixel along the heading's major axis (0 for the first
        dash of a path, ``gap + 1`` after). Positions are rounded relative to the last pixel,
        so the link to the previous dash is exactly ``gap + 1`` pixels on the major axis and at
        most that on the other (Chebyshev distance ``link_max``).
        """
        spec, rng, n = self.spec, self.rng, self.size
        (oy, ox), heading, spread, offset, _ = level
        lo, hi, blocked, old, length = self.lo, self.hi, self.blocked, self.old, spec.dash_length
        while level[4] > 0:
            level[4] -= 1
            self.budget -= 1
            if self.budget < 0:
                raise _NoRoom
            theta = heading + rng.uniform(-spread, spread)
            sy, sx = math.sin(theta), math.cos(theta)
            major = max(abs(sy), abs(sx))
            sy, sx = sy / major, sx / major  # one pixel per step along the major axis
            dash: list[Pixel] = []
            for j in range(offset, offset + length):
                y, x = oy + round(j * sy), ox + round(j * sx)
                if not (lo <= y <= hi and lo <= x <= hi) or blocked[y * n + x] or old[y * n + x]:
                    break
                dash.append((y, x))
            if len(dash) < length:
                continue
            return dash, theta
        return None

    def grow(
        self, start: Pixel, n_dashes: int, budget: int, *, markable: bool = False
    ) -> list[list[Pixel]]:
        """A path of ``n_dashes`` dashes from pixel ``start``: depth-first with backtracking.

        ``markable``: the last pixel must be able to take a marker (:meth:`tip_clear`).
        ``budget`` bounds the dashes tried; when it runs out: ``_NoRoom``.
        """
        self.old[:] = 0
        self.budget = budget
        first = [start, 0.0, math.pi, 0, _CANDIDATES]  # any heading
        path: list[list[Pixel]] = []
        stack: list[list] = [first]
        while stack:
            found = self._next_dash(path, stack[-1])
            if found is None:  # dead end: back up one dash
                stack.pop()
                if path:
                    if len(path) >= 3:
                        self._stamp_old(path[-3], -1)
                    path.pop()
                continue
            dash, theta = found
            path.append(dash)
            if len(path) >= 3:  # the dash two back is now "old": keep `separation` from it
                self._stamp_old(path[-3], 1)
            if len(path) == n_dashes:
                if not markable or self.tip_clear(dash[-1]):
                    return path
                if len(path) >= 3:
                    self._stamp_old(path[-3], -1)
                path.pop()
                continue
            stack.append([dash[-1], theta, self.turn, self.spec.gap + 1, _CANDIDATES])
        raise _NoRoom


def _pixels(path: list[list[Pixel]]) -> list[Pixel]:
    return [p for dash in path for p in dash]


def _draw_targets(
    spec: PathfinderSpec, rng: random.Random
) -> tuple[list[Pixel], list[list[list[Pixel]]], list[list[list[Pixel]]]]:
    """The markers' pixels and the two target paths of a positive and of a negative image.

    The markers come first, the same for both classes: ``p`` uniform in the middle half of
    the image, ``q`` the far tip of a path ``t`` grown from ``p``. The positive image keeps
    ``t`` and adds a second path from a random free pixel. The negative image grows two new
    paths instead: one from ``p`` that keeps ``separation`` from the marker on ``q``, then one
    from ``q`` that keeps it from the first path and the marker on ``p``. Both layouts are
    built from the same draws whatever the label, and a failure of either redraws everything
    (``_NoRoom``), so the markers are distributed exactly alike in the two classes.
    """
    canvas = _Canvas(spec, rng)
    n_dashes = spec.contour_length
    margin = spec.resolution // 4
    p = (
        round(rng.uniform(margin, spec.resolution - 1 - margin)),
        round(rng.uniform(margin, spec.resolution - 1 - margin)),
    )
    budget = _BUDGET * n_dashes
    t = canvas.grow(p, n_dashes, budget, markable=True)
    q = t[-1][-1]
    disc_p, disc_q = canvas.disc_at(p), canvas.disc_at(q)

    # Negative: a path from each marker; the markers keep `separation` apart.
    canvas.clear()
    canvas.block(disc_q)
    if not canvas.tip_clear(p):
        raise _NoRoom
    a = _grow_from(canvas, p, budget)
    canvas.clear()
    canvas.block(_pixels(a) + disc_p)
    b = _grow_from(canvas, q, budget)

    # Positive: the path from p to q and a second path anywhere.
    canvas.clear()
    canvas.block(_pixels(t) + disc_p + disc_q)
    c = _grow_from(canvas, None, budget)
    return disc_p + disc_q, [t, c], [a, b]


def _grow_from(canvas: _Canvas, start: Pixel | None, budget: int) -> list[list[Pixel]]:
    """A target path from ``start`` (``None``: a random free pixel), or ``_NoRoom``.

    Up to ``_TARGET_TRIES`` searches (each from a new random pixel if none was given).
    """
    n = canvas.size
    for _ in range(_TARGET_TRIES):
        if start is not None:
            y, x = start
        else:
            y, x = (
                round(canvas.rng.uniform(canvas.lo, canvas.hi)),
                round(canvas.rng.uniform(canvas.lo, canvas.hi)),
            )
            if canvas.blocked[y * n + x]:
                continue
        try:
            return canvas.grow((y, x), canvas.spec.contour_length, budget)
        except _NoRoom:
            continue
    raise _NoRoom


def draw_sample(spec: PathfinderSpec, label: int, rng: random.Random) -> np.ndarray:
    """One (resolution, resolution) uint8 image whose markers are connected iff ``label == 1``.

    Raises ``ValueError`` if no layout of the target paths is found in ``spec.max_attempts``
    tries (the geometry does not fit the resolution).
    """
    if label not in (0, 1):
        raise ValueError(f"pathfinder label must be 0 or 1, got {label!r}")
    for _ in range(spec.max_attempts):
        try:
            markers, positive, negative = _draw_targets(spec, rng)
            break
        except _NoRoom:
            continue
    else:
        raise ValueError(
            f"pathfinder: no room for two paths of {spec.contour_length} dashes in a "
            f"{spec.resolution}x{spec.resolution} image after {spec.max_attempts} tries; "
            f"use a larger resolution or an easier difficulty"
        )
    # The label enters the image only here, after both layouts (same markers) are drawn.
    paths = positive if label == 1 else negative
    canvas = _Canvas(spec, rng)
    canvas.block(_pixels(paths[0]) + _pixels(paths[1]) + markers)

    budget = _DISTRACTOR_BUDGET * spec.distractor_length
    for _ in range(spec.n_distractors):
        for _ in range(_DISTRACTOR_TRIES):
            start = (
                round(rng.uniform(canvas.lo, canvas.hi)),
                round(rng.uniform(canvas.lo, canvas.hi)),
            )
            if canvas.blocked[start[0] * canvas.size + start[1]]:
                continue
            try:
                distractor = canvas.grow(start, spec.distractor_length, budget)
            except _NoRoom:
                continue
            canvas.block(_pixels(distractor))
            paths.append(distractor)
            break

    image = np.zeros((spec.resolution, spec.resolution), dtype=np.uint8)
    ys, xs = zip(*(p for path in paths for p in _pixels(path)), strict=True)
    image[list(ys), list(xs)] = spec.dash_value
    ys, xs = zip(*markers, strict=True)
    image[list(ys), list(xs)] = spec.marker_value
    return image


def _image_rng(seed: int, split: str, index: int) -> random.Random:
    """The random stream of one image: a function of (seed, split, index) only."""
    state = np.random.SeedSequence((seed, SPLITS.index(split), index)).generate_state(2)
    return random.Random(int(state[0]) << 32 | int(state[1]))


def balanced_labels(n: int, seed: int, split: str) -> np.ndarray:
    """Exactly ``n // 2`` ones and ``n - n // 2`` zeros in a seeded order (uint8, (n,))."""
    labels = np.zeros(n, dtype=np.uint8)
    labels[: n // 2] = 1
    return np.random.default_rng((seed, SPLITS.index(split), 2**31)).permutation(labels)


def generate_split(
    spec: PathfinderSpec,
    n: int,
    *,
    seed: int,
    split: str,
    out: np.ndarray | None = None,
    rows: range | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` images (n, R, R) uint8 and labels (n,) uint8 of one split.

    ``out`` (e.g. a memory-mapped array) receives the images if given; ``rows`` limits the
    images drawn to those rows (the others are left alone; see :func:`write_split`).
    """
    if split not in SPLITS:
        raise ValueError(f"pathfinder split {split!r}; valid choices: {', '.join(SPLITS)}")
    if n < 0:
        raise ValueError(f"pathfinder: number of images must be >= 0, got {n}")
    shape = (n, spec.resolution, spec.resolution)
    if out is None:
        out = np.zeros(shape, dtype=np.uint8)
    elif out.shape != shape or out.dtype != np.uint8:
        raise ValueError(f"pathfinder: out must be uint8 {shape}, got {out.dtype} {out.shape}")
    labels = balanced_labels(n, seed, split)
    for i in _progress(range(n) if rows is None else rows, progress, f"pathfinder {split}"):
        out[i] = draw_sample(spec, int(labels[i]), _image_rng(seed, split, i))
    return out, labels


def _write_rows(
    path: str, spec: PathfinderSpec, n: int, seed: int, split: str, rows: range
) -> None:
    images = np.load(path, mmap_mode="r+")
    generate_split(spec, n, seed=seed, split=split, out=images, rows=rows)
    images.flush()


def write_split(
    path: Path,
    spec: PathfinderSpec,
    n: int,
    *,
    seed: int,
    split: str,
    workers: int = 1,
    progress: bool = False,
) -> np.ndarray:
    """Generate a split straight into the ``.npy`` file ``path``; return its labels.

    With ``workers > 1`` the images are drawn in parallel processes, each writing its own
    rows: the file is identical, since every image has its own random stream.
    """
    images = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(n, spec.resolution, spec.resolution)
    )
    labels = balanced_labels(n, seed, split)
    if workers <= 1 or n < 2 * workers:
        generate_split(spec, n, seed=seed, split=split, out=images, progress=progress)
        images.flush()
        return labels
    del images
    from concurrent.futures import ProcessPoolExecutor

    step = -(-n // (4 * workers))  # a few chunks per worker: even load
    chunks = [range(i, min(i + step, n)) for i in range(0, n, step)]
    with ProcessPoolExecutor(workers) as pool:
        jobs = [pool.submit(_write_rows, str(path), spec, n, seed, split, r) for r in chunks]
        for job in _progress_jobs(jobs, progress, f"pathfinder {split}"):
            job.result()
    return labels


def _progress_jobs(jobs: list, enabled: bool, desc: str) -> Iterator:
    if not enabled:
        return iter(jobs)
    from tqdm import tqdm

    return iter(tqdm(jobs, desc=desc, unit="chunk"))


def _progress(items: range, enabled: bool, desc: str) -> Iterator[int]:
    if not enabled:
        return iter(items)
    from tqdm import tqdm

    return iter(tqdm(items, desc=desc, mininterval=5.0))


# ---------------------------------------------------------------------------------------
# LRA release files
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LraRow:
    """One image of the release: its file and label."""

    image: Path
    label: int


def read_metadata(path: Path) -> list[list[str]]:
    """Rows of one ``metadata/<n>.npy`` file: text (as released) or a saved string array."""
    path = Path(path)
    raw = path.read_bytes()
    if raw.startswith(b"\x93NUMPY"):
        array = np.load(path, allow_pickle=False)
        if array.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D metadata array, got shape {array.shape}")
        return [[str(v) for v in row] for row in array.tolist()]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: neither a text nor a .npy metadata file") from None
    return [line.split() for line in text.splitlines() if line.strip()]


def list_lra_release(root: Path, difficulty: str) -> tuple[list[LraRow], list[Path]]:
    """Every image of one difficulty under ``root`` (e.g. ``lra_release/pathfinder32``).

    Returns the rows (metadata files in numeric order, rows in file order) and the empty
    image files that were skipped, as LRA's input pipeline skips them.
    """
    if difficulty not in LRA_DIRS:
        raise ValueError(
            f"pathfinder difficulty {difficulty!r}; valid choices: {', '.join(LRA_DIRS)}"
        )
    base = Path(root) / LRA_DIRS[difficulty]
    files = list((base / "metadata").glob("*.npy"))
    if not files:
        raise ValueError(f"no Pathfinder metadata files in {base / 'metadata'}")
    try:
        files.sort(key=lambda p: int(p.stem))
    except ValueError:
        raise ValueError(
            f"{base / 'metadata'}: metadata files must be named <integer>.npy"
        ) from None
    rows: list[LraRow] = []
    empty: list[Path] = []
    for file in files:
        for cols in read_metadata(file):
            if len(cols) < 4 or cols[3] not in ("0", "1"):
                raise ValueError(f"{file}: bad metadata row {' '.join(cols)!r} (label column 3)")
            image = base / cols[0] / cols[1]
            if not image.is_file():
                raise ValueError(f"{file}: image {image} is missing")
            if image.stat().st_size == 0:
                empty.append(image)
                continue
            rows.append(LraRow(image, int(cols[3])))
    return rows, empty


def read_png(path: Path, resolution: int) -> np.ndarray:
    """One release image as (resolution, resolution) uint8 grayscale."""
    from PIL import Image  # Pillow comes with matplotlib

    with Image.open(path) as img:
        array = np.asarray(img.convert("L"), dtype=np.uint8)
    if array.shape != (resolution, resolution):
        raise ValueError(
            f"{path}: image is {array.shape[1]}x{array.shape[0]}, expected "
            f"{resolution}x{resolution} (tasks.<task>.data.resolution)"
        )
    return array
