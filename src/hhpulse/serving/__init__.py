"""The KServe predictor for hhpulse bundles (the only hhpulse package that imports kserve).

Only :mod:`hhpulse.serving.model`, :mod:`~hhpulse.serving.middleware` and
:mod:`~hhpulse.serving.__main__` import kserve; ``Limits`` and ``VacancyModel`` are loaded on
first use, so ``hhpulse.serving.inputs`` and ``hhpulse.serving.options`` stay cheap to import
(the CLI builds its parser from them without starting kserve).

May import: :mod:`hhpulse.watch`, :mod:`hhpulse.model`, :mod:`hhpulse.data`, :mod:`hhpulse.hh`
and :mod:`hhpulse.config`; never :mod:`hhpulse.flows` (the two are independent).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Limits", "VacancyModel"]


def __getattr__(name: str) -> Any:
    if name == "Limits":
        from hhpulse.serving.inputs import Limits

        return Limits
    if name == "VacancyModel":
        from hhpulse.serving.model import VacancyModel

        return VacancyModel
    raise AttributeError(f"module 'hhpulse.serving' has no attribute {name!r}")
