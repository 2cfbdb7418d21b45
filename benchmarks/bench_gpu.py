"""XGBoost training on the GPU (device="cuda") against CPU hist, on a synthetic sparse set.

The set looks like hhpulse's features: 200,000 rows (HHPULSE_BENCH_GPU_ROWS), 50,000 TF-IDF-like
sparse columns at about 25 non-zeros per row, 4 classes whose signal sits in a few hundred
columns. Both devices train the same booster (hist, depth 6, 100 rounds); prints seconds per
device, the speedup, and that their validation log loss agrees. Skips cleanly without a CUDA GPU
or with the CPU-only xgboost-cpu wheel.
"""

from __future__ import annotations

import os
import time

import numpy as np
import scipy.sparse as sp


def _data(rows: int, cols: int = 50_000, nnz_per_row: int = 25, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, cols, size=rows * nnz_per_row)
    indptr = np.arange(0, rows * nnz_per_row + 1, nnz_per_row)
    data = rng.random(rows * nnz_per_row, dtype=np.float32)
    X = sp.csr_matrix((data, indices, indptr), shape=(rows, cols))
    X.sum_duplicates()
    signal = X[:, :400] @ rng.normal(size=(400, 4))
    y = np.asarray(signal + rng.gumbel(size=(rows, 4))).argmax(axis=1)
    return X, y


def main() -> None:
    import xgboost as xgb

    from hhpulse.model.train import cuda_available

    if not cuda_available():
        print("SKIP: no CUDA GPU (or this xgboost build has no CUDA); nothing to compare")
        return
    rows = int(os.environ.get("HHPULSE_BENCH_GPU_ROWS", "200000"))
    X, y = _data(rows)
    cut = int(rows * 0.9)
    dtrain = xgb.DMatrix(X[:cut], label=y[:cut])
    dval = xgb.DMatrix(X[cut:], label=y[cut:])
    print(f"{rows:,} rows x {X.shape[1]:,} sparse columns, nnz {X.nnz:,}; hist, depth 6, 100 rounds")
    seconds, loss = {}, {}
    for device in ("cpu", "cuda"):
        params = {
            "objective": "multi:softprob",
            "num_class": 4,
            "tree_method": "hist",
            "max_depth": 6,
            "learning_rate": 0.2,
            "device": device,
            "eval_metric": "mlogloss",
        }
        history: dict = {}
        start = time.perf_counter()
        xgb.train(params, dtrain, 100, evals=[(dval, "val")], evals_result=history, verbose_eval=False)
        seconds[device] = time.perf_counter() - start
        loss[device] = history["val"]["mlogloss"][-1]
        print(f"  {device:<5} {seconds[device]:7.1f}s  val log loss {loss[device]:.4f}")
    print(f"speedup cuda vs cpu hist: {seconds['cpu'] / seconds['cuda']:.1f}x")


if __name__ == "__main__":
    main()
