"""The replay's live hook: the champion of each simulated day serves that day's new vacancies.

Each day the serving champion predicts the vacancies first seen in the day's run, in process,
and the predictions are written to the served prediction log exactly as ``hhpulse logsink``
writes them; at the end they are scored against the labels the final history resolved, with
the monitor's own live accuracy (:func:`hhpulse.watch.monitor.live_demand`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hhpulse.config import LabelConfig, load_candidates
from hhpulse.data.store import Store
from hhpulse.flows.replay import ReplayDay
from hhpulse.flows.workflow import metrics_document, train_from_history
from hhpulse.model.bundle import load_bundle
from hhpulse.watch.monitor import held_out_auc, live_by_champion, live_demand, resolved_demand
from hhpulse.watch.served import ServedLogWriter, format_time, make_record, read_served

if TYPE_CHECKING:
    from hhpulse.model.bundle import ModelBundle

log = logging.getLogger(__name__)


def metrics_document_of(report: Any) -> dict[str, Any]:
    """The ``metrics.json`` shape of a :class:`~hhpulse.flows.workflow.TrainingReport`'s results."""
    return metrics_document(report.results)


class LiveHook:
    """A replay day hook (key ``live``): the champion serving during a simulated day predicts
    that day's newly opened vacancies in process, and the predictions are logged exactly as the
    sink logs them (:class:`~hhpulse.watch.served.ServedLogWriter`, records with the vacancy ids), in
    the replay's store. At the end, :meth:`summary` scores them against the labels the final
    history resolved (:func:`live_demand`).

    Which champion serves day *d*: the one the run of day *d - 1* left (``day.shared["champion"]``,
    set by the gate hook), since the vacancies first seen in run *d* opened between the two
    runs; the first run's vacancies (the market as observation began) are not served.

    Without a gate hook, a stand-in champion: every ``retrain_every`` days it trains on the
    history so far with :func:`hhpulse.flows.workflow.train_from_history` and serves the newest
    bundle, with no gate. It trains the replay's **linear** candidates (and the baselines,
    always): XGBoost every simulated day would make a 45-day replay some 45 trainings long.
    Its own held-out demand test AUC is kept for each bundle (``stand_in_test_auc``), so the
    live AUC can be read against the same kind of model.
    """

    key = "live"

    def __init__(self, *, retrain_every: int = 1, candidates: Sequence[Any] | None = None) -> None:
        self.retrain_every = retrain_every
        self.candidates = candidates
        self._serving: ModelBundle | None = None
        self._writer: ServedLogWriter | None = None
        self._store: Store | None = None
        self._history: Callable[[], pd.DataFrame] | None = None
        self._labels: LabelConfig | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="hhpulse-live-")
        self.days: list[dict[str, Any]] = []
        self.stand_in = False
        self.trained: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []  # stand-in trainings that failed (the last bundle served on)

    def on_day(self, day: ReplayDay) -> None:
        self._store, self._history = day.store, day.history
        self._labels = day.settings.label_config
        if self._writer is None:
            self._writer = ServedLogWriter(day.store, max_records=10_000, max_seconds=1e9)
        served = 0
        if self._serving is not None and day.new_ids:
            served = self._predict(day)
        self.days.append(
            {
                "run_id": day.run_id,
                "new": len(day.new_ids),
                "served": served,
                "model_version": self._serving.version if self._serving is not None and served else None,
            }
        )
        # a gate hook that ran decides, even when it has no champion yet (None): no stand-in then
        self._serving = day.shared["champion"] if "champion" in day.shared else self._stand_in(day)

    def _predict(self, day: ReplayDay) -> int:
        assert self._serving is not None and self._writer is not None
        hist = day.history()
        rows = hist[hist["id"].astype(str).isin(day.new_ids)]
        keep = []
        for r in rows[["id", "responsibility", "name", "requirement"]].to_dict("records"):
            inst = {k: v for k, v in r.items() if k != "id" and isinstance(v, str) and v.strip()}
            if inst:  # a vacancy without any text is never sent to a predictor
                keep.append({"responsibility": "", **inst, "id": str(r["id"])})
        if not keep:
            return 0
        preds = self._serving.predict(keep)
        when = format_time(day.collected_at.to_pydatetime())
        records = [
            make_record(
                time=when,
                model_version=self._serving.version,
                request_id=f"replay-{day.run_id}",
                instance=i,
                prediction=p,
            )
            for i, p in zip(keep, preds, strict=True)
        ]
        self._writer.add(records)
        self._writer.flush()
        return len(records)

    def _stand_in(self, day: ReplayDay) -> ModelBundle | None:
        """Train on the history so far and serve it (every ``retrain_every`` days)."""
        self.stand_in = True
        if self._serving is not None and day.index % self.retrain_every:
            return self._serving
        cands = self.candidates or [
            c for c in (day.settings.candidates or load_candidates()) if c.kind != "xgboost"
        ]
        out = Path(self._tmp.name) / f"day-{day.index:04d}"
        try:
            rep = train_from_history(
                day.history(),
                day.rates,
                out,
                label_config=day.settings.label_config,
                feature_config=day.settings.feature_config,
                split_config=day.settings.split_config,
                candidates=cands,
                device=day.settings.device,
                primary=day.settings.primary,
                synthetic=True,
            )
        except Exception as exc:  # e.g. too little data in the first days: keep serving what there is
            log.info("live: no stand-in champion after run %s: %s", day.run_id, exc)
            self.failed.append({"run_id": day.run_id, "error": f"{type(exc).__name__}: {exc}"[:300]})
            return self._serving
        if self._serving is not None and self._serving.path.parent == Path(self._tmp.name):
            shutil.rmtree(self._serving.path, ignore_errors=True)  # keep one bundle on disk
        test = held_out_auc(metrics_document_of(rep))
        self.trained.append(
            {
                "run_id": day.run_id,
                "version": rep.version,
                "demand_test_auc": test.get("demand"),
                "demand_proxy": bool(rep.summary.get("demand_proxy")),
            }
        )
        return load_bundle(rep.bundle_dir)

    def summary(self) -> dict[str, Any]:
        if self._writer is not None:
            self._writer.flush()
        out: dict[str, Any] = {
            "champion": "stand-in (trained every day, no gate)" if self.stand_in else "the gate hook's",
            "days": len(self.days),
            "served": sum(d["served"] for d in self.days),
            "demand": None,
            "days_detail": self.days,
        }
        if self.stand_in:
            out["stand_in"] = {
                "trained": len(self.trained),
                "failed": self.failed,
                "retrain_every": self.retrain_every,
                "demand_proxy_days": sum(t["demand_proxy"] for t in self.trained),
                "last_test_auc": self.trained[-1]["demand_test_auc"] if self.trained else None,
                "bundles": self.trained,
            }
        if self._store is not None and self._history is not None:
            records = list(read_served(self._store))
            resolved = resolved_demand(self._history(), self._labels)
            out["demand"] = live_demand(records, resolved)
            proxy = {t["version"] for t in self.trained if t["demand_proxy"]}
            out["demand_by_champion"] = live_by_champion(records, resolved, proxy)
        self._tmp.cleanup()
        return out
