"""Workflows over the stages: what a run, a pipeline step, a replay or a deploy does.

``workflow`` (collect, train, judge and bundle as one call), ``pipeline_steps`` (the core of
the KFP steps, as plain functions), ``replay`` with its day hooks ``replay_gate`` and
``replay_live``, ``batch`` (``hhpulse predict`` over JSON lines), ``deploy`` (the
InferenceService: render, apply, roll back) and ``outcome`` (a run's outcome record).

May import: :mod:`hhpulse.watch`, :mod:`hhpulse.model`, :mod:`hhpulse.data`, :mod:`hhpulse.hh`
and :mod:`hhpulse.config`; never :mod:`hhpulse.serving` (the two are independent).
"""
