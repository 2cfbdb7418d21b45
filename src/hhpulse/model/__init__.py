"""The model stage: from the history to a verified model bundle and the champion pointer.

``text`` (the one tokenizer for training and serving), ``inputs`` (the input contract),
``features`` (TF-IDF), ``labels`` and ``dataset`` (cohorts, the time split), ``evaluate``,
``calibration``, ``train`` (candidates, the baseline, selection), ``report`` (HTML), ``explain``,
``bundle`` (save, load, verify, predict), ``gate`` (the paired bootstrap), ``refit`` (the
published fit) and ``registry`` (publish, the champion pointer).

May import: :mod:`hhpulse.data`, :mod:`hhpulse.hh` and :mod:`hhpulse.config`.
"""
