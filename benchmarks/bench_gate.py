"""The gate's paired bootstrap: vectorised resampling against resampling one sklearn call at a time.

For a test set of N rows (3 cohorts, scores rounded to 2 decimals so there are ties, as real
scores have), times :func:`hhpulse.model.gate.paired_bootstrap` with 1000 resamples of ROC AUC OvO
for both models, and the baseline: the same resamples, each scored by sklearn's
``roc_auc_score`` for both models (timed on 100 resamples, scaled to 1000). Prints the
seconds and the ratio measured in the same run, and checks the two agree.
"""

from __future__ import annotations

import time

import numpy as np


def _data(n: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    out = []
    for skill in (1.0, 1.1):
        logits = rng.normal(size=(n, 3))
        logits[np.arange(n), y] += skill
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        out.append(np.round(p, 2) / np.round(p, 2).sum(axis=1, keepdims=True))
    return [("a", "b", "c")[i] for i in y], out[0], out[1]


def main() -> None:
    from sklearn.metrics import roc_auc_score

    from hhpulse.model.gate import paired_bootstrap, stratified_counts

    for n in (300, 800):
        labels, a, b = _data(n, 1)
        t = time.perf_counter()
        iv = paired_bootstrap(labels, a, b, ["a", "b", "c"])
        fast = time.perf_counter() - t
        yi = np.array(["abc".index(v) for v in labels])
        w = stratified_counts(yi, 1000, iv.seed)[:100]  # the first 100 of the same resamples
        # as hhpulse.model.evaluate.classification_metrics scores them: each row renormalised
        norm = [p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None) for p in (a, b)]
        t = time.perf_counter()
        diffs = []
        for r in range(100):
            rows = np.repeat(np.arange(n), w[r].astype(int))
            auc = [roc_auc_score(yi[rows], p[rows], multi_class="ovo", labels=[0, 1, 2]) for p in norm]
            diffs.append(auc[0] - auc[1])
        slow = (time.perf_counter() - t) * 10
        assert np.allclose(diffs, iv.samples[:100])  # the same resamples give the same differences
        print(
            f"{n} rows x 1000 resamples, ROC AUC OvO of both models: vectorised {fast:.3f}s, "
            f"sklearn per resample {slow:.2f}s (scaled from 100): {slow / fast:.0f}x faster; {iv.line()}"
        )
