"""hhpulse: salary and demand cohorts for hh.ru vacancies.

The package is cut by stage; each stage imports only the stages below it (checked by
import-linter, see ``[tool.importlinter]`` in pyproject.toml)::

    cli, commands         the `hhpulse` command line (entry points)
    serving  |  flows     the KServe predictor  |  workflows: train, gate, publish, replay, deploy
    watch                 the served prediction log, the log sink, the monitor
    model                 text, features, labels, training, calibration, the gate, bundles, registry
    data                  the store, raw runs, sources, collect, the data contract, history, retention
    hh                    the hh.ru API: typed records, the client, the emulator and synthetic market
    config                settings: frozen dataclasses and defaults

The core (everything but ``serving``) never imports kfp, kserve or kubernetes; the KFP
components (``components/``), the pipeline (``pipelines/``) and the predictor are thin
adapters over it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hhpulse")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0"

__all__ = ["__version__"]
