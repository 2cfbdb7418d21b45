"""The KServe predictor for hhpulse bundles (the only hhpulse module that imports kserve)."""

from hhpulse.serving.model import Limits, VacancyModel

__all__ = ["Limits", "VacancyModel"]
