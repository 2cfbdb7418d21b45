"""The data stage: from a source to the history that every model trains on.

``store`` (folder or S3, conditional writes) -> ``runs`` (the raw run's layout, one home) ->
``leases`` (claims with an expiry) -> ``sources`` (hh.ru API, file dump, demo emulator) ->
``collect`` (one raw run) and ``validate`` (the data contract, quarantine) -> ``history`` (the
reference fold) -> ``deltatable`` (a Delta Lake table in a store, through delta-rs) and
``history_legacy`` (the layout of earlier versions, read to migrate it) -> ``history_store``
(the stored history: a Delta table folded run by run) -> ``retention`` (``hhpulse store prune``:
raw runs and the history's vacuum).

May import: :mod:`hhpulse.hh` and :mod:`hhpulse.config`.
"""
