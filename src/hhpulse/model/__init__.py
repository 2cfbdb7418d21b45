"""The model stage: from the history to a verified model bundle and the champion pointer.

``text`` (the one tokenizer for training and serving), ``inputs`` (the input contract),
``features`` (TF-IDF), ``labels`` and ``dataset`` (cohorts, the time split), ``evaluate``,
``calibration``, ``train`` (candidates, the baseline, selection), ``report`` (HTML), ``explain``,
``bundle`` (save, load, verify, predict), ``gate`` (the paired bootstrap), ``refit`` (the
published fit) and ``registry`` (publish, the champion pointer).

May import: :mod:`hhpulse.data`, :mod:`hhpulse.hh` and :mod:`hhpulse.config`.
"""

import os

# OpenMP threads (XGBoost's, and scikit-learn's: one libgomp per process) spin while they wait
# for work, by default. On cores shared with other processes (a busy node, kfp.local's
# parallel steps, the 2-core machine of docs/benchmarks.md) the spinning threads take the
# cores from the ones with work: 50 XGBoost rounds on 1,600 dense rows took 35-37 s on 2
# threads against 2.3 s with passive waiting (load average 14). libgomp reads the policy once,
# when it loads (the first import of scikit-learn or xgboost), so it is set here, before the
# model stage imports either; a value set in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
