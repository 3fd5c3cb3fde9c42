"""Seeded, machine-independent splits of the classification datasets.

Two rules, both deterministic across runs, machines and library versions:

* :func:`stratified_split` holds out a part of a labelled training set as the validation
  split (CIFAR, Tiny-ImageNet). Every class gives its share: with ``n_val`` held out of ``n``,
  class ``c`` (``n_c`` samples) gives ``floor(n_val * n_c / n)``, and the rounding remainder
  goes to the classes with the largest fractional parts (ties: smaller label first). On
  balanced data that is exact: CIFAR10 at 0.1 gives 500 per class (45k / 5k), Tiny-ImageNet
  at 0.1 gives 50 of each class's 500 (90k / 10k). Inside a class the held-out samples are
  the first ``k_c`` of a permutation drawn from ``numpy.random.RandomState(seed)``, whose
  stream numpy freezes (NEP 19), one permutation per class in label order.
* :func:`imagenet_val_names` picks the ImageNet validation split (10k of the 50k official
  val images; the other 40k are the test split) over the canonical, sorted file names
  ``ILSVRC2012_val_00000001.JPEG`` ... ``ILSVRC2012_val_00050000.JPEG``. Its output is
  committed as ``imagenet_val_split.txt`` (regenerate it with ``make_imagenet_split.py``;
  a test checks the two agree), so the split never depends on what a machine has on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGENET_SPLIT_FILE",
    "IMAGENET_SPLIT_SEED",
    "imagenet_val_names",
    "read_name_list",
    "render_name_list",
    "split_count",
    "stratified_split",
]

#: The committed ImageNet validation split (10k official-val file names, one a line).
IMAGENET_SPLIT_FILE = Path(__file__).with_name("imagenet_val_split.txt")
#: The seed the committed file was generated with.
IMAGENET_SPLIT_SEED = 0
_IMAGENET_VAL_TOTAL = 50_000
_IMAGENET_VAL_SIZE = 10_000


def split_count(val_split: float, n: int) -> int:
    """Number of samples held out: ``round(val_split * n)`` for a fraction, else the count.

    Raises:
        ValueError: the result leaves no validation or no training sample.
    """
    n_val = round(val_split * n) if val_split < 1 else int(val_split)
    if not 0 < n_val < n:
        raise ValueError(
            f"`val_split={val_split}` holds out {n_val} of {n} training samples; it must "
            "leave at least one sample on each side (a fraction in (0, 1) or a count)."
        )
    return n_val


def stratified_split(
    labels: Sequence[int] | np.ndarray, val_split: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified ``(train, val)`` index arrays (both sorted) into ``labels``.

    Args:
        labels: the class of each sample, in the dataset's (deterministic) order.
        val_split: fraction (``< 1``) or count (``>= 1``) of the samples to hold out.
        seed: the split seed.

    Example:
        >>> train, val = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], 0.5, seed=0)
        >>> sorted(np.asarray([0, 0, 0, 0, 1, 1, 1, 1])[val].tolist())
        [0, 0, 1, 1]
        >>> len(train), len(val)
        (4, 4)
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    n_val = split_count(val_split, n)
    classes, counts = np.unique(labels, return_counts=True)
    quota = n_val * counts  # exact integers: share of class c is quota[c] / n
    take = quota // n
    remainder = n_val - int(take.sum())
    order = np.lexsort((classes, -(quota % n)))  # largest fractional part first, then label
    take[order[:remainder]] += 1
    rng = np.random.RandomState(seed)
    held = [
        np.flatnonzero(labels == c)[rng.permutation(int(count))[:k]]
        for c, count, k in zip(classes, counts, take)
    ]
    val = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(n), val, assume_unique=True)
    return train, val


def imagenet_val_names(
    seed: int = IMAGENET_SPLIT_SEED,
    n_val: int = _IMAGENET_VAL_SIZE,
    n_total: int = _IMAGENET_VAL_TOTAL,
) -> list[str]:
    """The ImageNet validation split: ``n_val`` of the canonical official-val names, sorted.

    The names are ``ILSVRC2012_val_%08d.JPEG`` for 1 ... ``n_total``; the chosen ones are the
    first ``n_val`` of ``RandomState(seed).permutation(n_total)``.

    Example:
        >>> imagenet_val_names(seed=0, n_val=2, n_total=10)
        ['ILSVRC2012_val_00000003.JPEG', 'ILSVRC2012_val_00000009.JPEG']
    """
    if not 0 < n_val < n_total:
        raise ValueError(f"need 0 < n_val < n_total; got n_val={n_val}, n_total={n_total}.")
    chosen = np.sort(np.random.RandomState(seed).permutation(n_total)[:n_val])
    return [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in chosen]


def render_name_list(names: Sequence[str], header: str = "") -> str:
    """The text of a name-list file: ``#`` comment lines, then one name a line."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    return "\n".join([*lines, *names]) + "\n"


def read_name_list(path: str | Path) -> list[str]:
    """Names in a name-list file (blank lines and ``#`` comments skipped).

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]
