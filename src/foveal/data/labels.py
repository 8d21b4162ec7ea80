"""Label errors by confident learning (Northcutt, Jiang, Chuang 2021, JAIR 70): which given labels
out-of-sample predicted probabilities contradict, ranked, with the estimated noise matrix.

Written from the paper with cleanlab's `filter.find_label_issues` (prune_by_noise_rate) as the
reference it is tested against (tests/data/test_labels.py):

1. per-class thresholds t_k = mean of p(k) over the images given label k (their self-confidence);
2. the confident joint C[i][j]: images given i whose probability clears t_j (the argmax of the
   cleared classes when several do), the diagonal at least 1, then calibrated so that row i sums
   to the count of label i and the whole to N;
3. prune by noise rate: for every off-diagonal C[i][j], the C[i][j] images given i with the
   largest margin p(j) - p(i) are flagged; images whose given label is the argmax are unflagged;
4. flagged images are ranked by self-confidence p(given) (or by the normalized margin).

Only numpy here: the K-fold training that makes the probabilities lives in `foveal.tasks.labels`.
This module also reads what `foveal check --labels` writes back for `data.exclude` / `data.relabel`.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np

from ..config import CheckConfig

EPS = 1e-6  # probability slack of the threshold and argmax comparisons (cleanlab's FLOATING_POINT_COMPARISON)
COLUMNS = ("rank", "index", "split", "path", "given", "suggested", "self_confidence", "margin",
           "p_suggested", "accept")


def _round_rows(m: np.ndarray) -> np.ndarray:
    """Round each row to integers keeping its (rounded) total: the remainder goes to the largest fractions."""
    out = np.empty(m.shape, dtype=np.int64)
    for r, row in enumerate(m.astype(np.float64)):
        ints = row.round()
        diff = int(round(row.sum().round() - ints.sum()))
        if diff:
            frac = row - ints
            order = np.argsort(frac)[::-1] if diff > 0 else np.argsort(frac)
            ints[order[:abs(diff)]] += np.sign(diff)
        out[r] = ints
    return out


def class_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(K,) mean self-confidence p(k) of the images given label k; 2 (never reached) for absent classes."""
    K = probs.shape[1]
    t = np.array([probs[labels == k, k].mean() if np.any(labels == k) else 2.0 for k in range(K)])
    return np.clip(t, 2 * EPS, None)


def confident_joint(labels: np.ndarray, probs: np.ndarray, calibrate: bool = True) -> np.ndarray:
    """(K, K) int counts C[given][true] of the images whose probability clears a class threshold."""
    K = probs.shape[1]
    above = probs >= class_thresholds(labels, probs) - EPS  # (N, K)
    n_above = above.sum(1)
    guess = np.where(n_above > 1, probs.argmax(1), above.argmax(1))  # the true-label guess
    keep = n_above > 0
    cj = np.zeros((K, K), dtype=np.int64)
    np.add.at(cj, (labels[keep], guess[keep]), 1)
    np.fill_diagonal(cj, np.maximum(cj.diagonal(), 1))
    if not calibrate:
        return cj
    counts = np.bincount(labels, minlength=K)
    cal = cj / np.clip(cj.sum(1, keepdims=True), 1e-100, None) * counts[:, None]  # row i sums to count(i)
    cal = cal / max(cal.sum(), 1e-100) * counts.sum()
    return _round_rows(cal)


def noise_matrix(cj: np.ndarray) -> np.ndarray:
    """(K, K) P(given = i | true = j) from a calibrated confident joint (each column sums to 1)."""
    return cj / np.clip(cj.sum(0, keepdims=True), 1e-100, None)


def _prune_counts(cj: np.ndarray, min_per_class: int = 1) -> np.ndarray:
    """cj transposed ([true][given]) with each diagonal raised to `min_per_class`, taken evenly from
    the nonzero off-diagonal counts of its column, so pruning leaves every given class some images."""
    m = cj.T.astype(np.float64)
    diag = m.diagonal().copy()
    new_diag = np.maximum(diag, min_per_class)
    per_col = np.maximum(np.count_nonzero(m, axis=0) - 1.0, 1.0)
    m = np.clip(m - (new_diag - diag) / per_col, 0, None)
    np.fill_diagonal(m, new_diag)
    return _round_rows(m)


def prune_by_noise_rate(labels: np.ndarray, probs: np.ndarray, cj: np.ndarray) -> np.ndarray:
    """(N,) bool: for given class i and true class j != i, the cj[i][j] images given i with the
    largest margin p(j) - p(i); then images whose given label is (within EPS) the argmax are kept."""
    K = probs.shape[1]
    prune = _prune_counts(cj)  # [true][given]
    flagged = np.zeros(len(labels), dtype=bool)
    for i in range(K):
        rows = np.flatnonzero(labels == i)
        if len(rows) <= 1:
            continue
        p = probs[rows]
        for j in range(K):
            n = prune[j, i]
            if j != i and n > 0:
                flagged[rows[np.argsort(-(p[:, j] - p[:, i]))[:n]]] = True
    bumped = probs.copy()
    bumped[np.arange(len(labels)), labels] += EPS
    flagged[bumped.argmax(1) == labels] = False
    return flagged


def self_confidence(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N,) p(given label)."""
    return probs[np.arange(len(labels)), labels]


def normalized_margin(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N,) (p(given) - max p(other) + 1) / 2, in [0, 1]; low means another class is clearly better."""
    other = probs.copy()
    other[np.arange(len(labels)), labels] = -np.inf
    return (self_confidence(labels, probs) - other.max(1) + 1) / 2


RANK_SCORES = {"self_confidence": self_confidence, "normalized_margin": normalized_margin}  # low: likely wrong


@dataclass
class LabelIssues:
    """What confident learning found in one split: flagged images ranked, and the noise estimates."""

    ranked: np.ndarray  # (M,) positions in the split of the flagged images, most likely wrong first
    given: np.ndarray  # (N,) int given labels
    probs: np.ndarray  # (N, K) out-of-sample probabilities
    thresholds: np.ndarray  # (K,) per-class thresholds
    confident_joint: np.ndarray  # (K, K) calibrated counts [given][true]
    noise_matrix: np.ndarray  # (K, K) P(given = i | true = j)
    rank_by: str = CheckConfig.rank_by  # how `ranked` is ordered (RANK_SCORES)

    @property
    def mask(self) -> np.ndarray:
        """(N,) bool: flagged."""
        m = np.zeros(len(self.given), dtype=bool)
        m[self.ranked] = True
        return m

    @property
    def score(self) -> np.ndarray:
        """(N,) the ranking score (`rank_by`) of every image, lowest most likely wrong."""
        return RANK_SCORES[self.rank_by](self.given, self.probs)

    @property
    def suggested(self) -> np.ndarray:
        """(N,) argmax of the probabilities (for a flagged image, never its given label)."""
        return self.probs.argmax(1)

    @property
    def noise_rate(self) -> float:
        """Estimated fraction of wrong labels: off-diagonal mass of the calibrated confident joint."""
        return float(1 - np.trace(self.confident_joint) / max(self.confident_joint.sum(), 1))


def confident_learning(labels: Sequence[int] | np.ndarray, probs: np.ndarray,
                       rank_by: Literal["self_confidence", "normalized_margin"] = CheckConfig.rank_by) -> LabelIssues:
    """Label issues of (N,) given labels under (N, K) out-of-sample probabilities (rows sum to 1)."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probabilities must be (N, K) for N = {len(labels)} labels, got shape {probs.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}, got {labels.min()}..{labels.max()}")
    if rank_by not in RANK_SCORES:
        raise ValueError(f"rank_by '{rank_by}' is not one of {', '.join(RANK_SCORES)}")
    cj = confident_joint(labels, probs)
    flagged = np.flatnonzero(prune_by_noise_rate(labels, probs, cj))
    score = RANK_SCORES[rank_by](labels, probs)
    ranked = flagged[np.argsort(score[flagged], kind="stable")]
    return LabelIssues(ranked, labels, probs, class_thresholds(labels, probs), cj, noise_matrix(cj), rank_by)


# ---- files: what `foveal check --labels` writes, and what data.exclude / data.relabel read -------------
def issue_rows(issues: LabelIssues, classes: Sequence[str], split: str,
               paths: Optional[Sequence[str]] = None, everything: bool = False) -> list[dict]:
    """One dict per flagged image, in rank order, with the columns of `label_issues.csv`; with `everything`,
    one per image of the split, ranked by the same score (least likely right first), plus `flagged` (1/0):
    the rows of `label_quality.csv`, for reviewing further down than the flagged set."""
    y, p = issues.given, issues.probs
    sc, mg, sug = self_confidence(y, p), normalized_margin(y, p), issues.suggested
    if everything:
        order, flagged = np.argsort(issues.score, kind="stable"), issues.mask
    else:
        order, flagged = issues.ranked, None
    return [{"rank": r + 1, "index": int(i), "split": split, "path": paths[i] if paths is not None else "",
             "given": classes[issues.given[i]], "suggested": classes[sug[i]], "self_confidence": round(float(sc[i]), 6),
             "margin": round(float(mg[i]), 6), "p_suggested": round(float(issues.probs[i, sug[i]]), 6), "accept": "",
             **({"flagged": int(flagged[i])} if flagged is not None else {})}
            for r, i in enumerate(order.tolist())]


def write_issue_csv(rows: list[dict], path: Path) -> None:
    """label_issues.csv, or label_quality.csv when the rows carry `flagged` (see `issue_rows`)."""
    columns = COLUMNS + (("flagged",) if rows and "flagged" in rows[0] else ())
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def write_noise_csv(issues: LabelIssues, classes: Sequence[str], path: Path) -> None:
    """The noise matrix P(given = row | true = column), with class names as header and first column."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["given\\true"] + list(classes))
        for c, row in zip(classes, issues.noise_matrix):
            w.writerow([c] + [f"{v:.6f}" for v in row])


@dataclass(frozen=True)
class Ref:
    """One image named in an exclude/relabel file: by path, or by (split, position in that split)."""

    split: Optional[str] = None  # None: the source's training pool ('train', else 'all')
    index: Optional[int] = None
    path: Optional[str] = None
    label: Optional[str] = None  # relabel: the accepted class name


TRUE = {"1", "true", "yes", "y", "x", "accept", "accepted"}


def read_refs(path: str | Path, relabel: bool = False) -> list[Ref]:
    """The images a `label_issues.csv` (or, for exclude, a text file of paths / indices / split:index,
    one a line, # comments) names; for `relabel` only the rows whose `accept` is true, with their
    `suggested` class. A CSV with a `flagged` column (`label_quality.csv`: every image of the split,
    ranked) names only its flagged rows, so the check's own output is safe to pass on whole."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"data.{'relabel' if relabel else 'exclude'} file '{p}' does not exist")
    text = p.read_text().splitlines()
    header = [c.strip().lower() for c in text[0].split(",")] if text else []
    if "index" in header or "path" in header:
        rows = list(csv.DictReader(text))
        if relabel and (not rows or "accept" not in rows[0] or "suggested" not in rows[0]):
            raise ValueError(f"data.relabel file '{p}' needs the columns 'accept' and 'suggested' "
                             "(a label_issues.csv with an accept column filled in: 1/true/yes)")
        if relabel:
            rows = [r for r in rows if (r.get("accept") or "").strip().lower() in TRUE]
        elif rows and "flagged" in rows[0]:
            rows = [r for r in rows if (r.get("flagged") or "").strip().lower() in TRUE]
        return [Ref(r.get("split") or None, int(r["index"]) if (r.get("index") or "").strip() else None,
                    (r.get("path") or "").strip() or None, (r.get("suggested") or "").strip() or None) for r in rows]
    if relabel:
        raise ValueError(f"data.relabel file '{p}' is not a CSV with a header (index/path, suggested, accept)")
    refs = []
    for line in (t.split("#")[0].strip() for t in text):
        if not line:
            continue
        split, _, idx = line.rpartition(":")
        if idx.isdigit() and (not split or split.isidentifier()):
            refs.append(Ref(split or None, int(idx)))
        else:
            refs.append(Ref(path=line))
    return refs


def _locate(refs: list[Ref], bundle, default: str, what: str, file: str) -> list[tuple[str, int, Ref]]:
    """(split, position, ref) for each ref; an index must be in range, a path must name an image,
    and where a row has both they must agree (a list written for other data is refused)."""
    where = {p: (name, i) for name, s in bundle.splits.items() for i, p in enumerate(s.paths or [])}
    out = []
    for r in refs:
        if r.index is not None:
            split = r.split or default
            if split not in bundle.splits:
                raise ValueError(f"data.{what} '{file}': split '{split}' is not one of {', '.join(bundle.splits)}")
            n = len(bundle.splits[split])
            if not 0 <= r.index < n:
                raise ValueError(f"data.{what} '{file}': index {r.index} is outside split '{split}' ({n} images); "
                                 "was the file written for other data?")
            paths = bundle.splits[split].paths
            if r.path and paths is not None and paths[r.index] != r.path:
                raise ValueError(f"data.{what} '{file}': row index {r.index} names '{r.path}' but position {r.index} "
                                 f"of split '{split}' is '{paths[r.index]}'; check the file against this data")
            out.append((split, r.index, r))
        elif r.path in where:
            out.append((*where[r.path], r))
        else:
            raise ValueError(f"data.{what} '{file}': '{r.path}' is neither an index nor the path of an image of "
                             f"{bundle.name}")
    return out


def apply_label_files(bundle, exclude: Optional[str], relabel: Optional[str]):
    """The bundle with `relabel`'s accepted suggestions applied, then `exclude`'s images removed.

    Positions are those of the splits as the source gives them (for named datasets the official
    order), which is what `foveal check --labels` writes; so this runs before splits are carved.
    """
    if not exclude and not relabel:
        return bundle
    from .bundle import DataBundle

    default = "train" if "train" in bundle.splits else next(iter(bundle.splits))
    splits, notes = dict(bundle.splits), []
    if relabel:
        index = {c: i for i, c in enumerate(bundle.classes)}
        changed: dict[str, int] = {}
        for split, i, r in _locate(read_refs(relabel, relabel=True), bundle, default, "relabel", relabel):
            if r.label not in index and not ((r.label or "").isdigit() and int(r.label) < len(bundle.classes)):
                raise ValueError(f"data.relabel '{relabel}': suggested class '{r.label}' is not one of "
                                 f"{', '.join(bundle.classes)}")
            s = splits[split]
            if split not in changed:
                s = splits[split] = dataclasses.replace(s, labels=s.labels.clone())
            s.labels[i] = index[r.label] if r.label in index else int(r.label)
            changed[split] = changed.get(split, 0) + 1
        notes += [f"data.relabel: {n} labels of split '{k}' changed by '{relabel}'" for k, n in changed.items()]
    if exclude:
        import torch

        drop: dict[str, set[int]] = {}
        for split, i, _ in _locate(read_refs(exclude), bundle, default, "exclude", exclude):
            drop.setdefault(split, set()).add(i)
        for split, gone in drop.items():
            if len(gone) == len(splits[split]):
                raise ValueError(f"data.exclude '{exclude}' names every one of the {len(gone)} images of split "
                                 f"'{split}', which would leave nothing to train on: pass label_issues.csv (the "
                                 "flagged images), or a list of only the images to leave out")
            keep = torch.tensor([i for i in range(len(splits[split])) if i not in gone], dtype=torch.long)
            splits[split] = splits[split].subset(keep)
        notes += [f"data.exclude: {len(g)} images of split '{k}' left out by '{exclude}'" for k, g in drop.items()]
    return DataBundle(bundle.name, bundle.classes, splits, list(bundle.problems) + notes)
