"""hhpulse: salary and demand cohorts for hh.ru vacancies.

The core package is plain Python: it never imports kfp, kserve or kubernetes.
Components (``components/``), pipelines (``pipelines/``) and the predictor
(``hhpulse.serving``) are thin adapters over it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hhpulse")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0"

__all__ = ["__version__"]
