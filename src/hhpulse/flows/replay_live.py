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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hhpulse.config import LabelConfig, load_candidates
from hhpulse.data.store import Store
from hhpulse.flows.replay import ReplayDay, oracle_of, served_instances
from hhpulse.flows.workflow import metrics_document, train_from_history
from hhpulse.model.bundle import load_bundle
from hhpulse.model.dataset import young_history
from hhpulse.watch.monitor import held_out_auc, live_by_champion, live_demand, resolved_demand
from hhpulse.watch.served import ServedLogWriter, format_time, make_record, read_served

if TYPE_CHECKING:
    from hhpulse.hh.market import Market
    from hhpulse.model.bundle import ModelBundle

log = logging.getLogger(__name__)


def metrics_document_of(report: Any) -> dict[str, Any]:
    """The ``metrics.json`` shape of a :class:`~hhpulse.flows.workflow.TrainingReport`'s results."""
    return metrics_document(report.results)


GOAL_LIVE_RATIO = 0.97  # the version-stratified live demand AUC >= 0.97 x the oracle's on the same rows
GOAL_CHAMPION_GAP = 0.05  # each champion's live AUC within 0.05 of its offline figure at publication ...
GOAL_CHAMPION_ROWS = 300  # ... once it has this many resolved served rows


def offline_figure(bundle: ModelBundle) -> dict[str, Any]:
    """A bundle's offline demand figure at publication: the held-out test AUC, its bootstrap
    interval, and why it comes from a young history (None when it does not)."""
    m = bundle.metadata.get("metrics") or {}
    return {
        "offline_auc": held_out_auc(m).get("demand"),
        "offline_interval": (m.get("test_intervals") or {}).get("demand"),
        "young_history": young_history(m.get("dataset") or {}, m.get("boundaries") or {}),
    }


def champions_offline_live(
    live: Mapping[str, Any], offline: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Per served version, its offline figure at publication beside its live one (the live
    demand AUC on the rows it served, resolved since), the gap, and whether it is within
    :data:`GOAL_CHAMPION_GAP` (judged from :data:`GOAL_CHAMPION_ROWS` resolved rows on).

    A figure measured on a young history (``young_history``, see
    :func:`hhpulse.model.dataset.young_history`) is shown, marked, with its gap, but it is not a
    forecast (``forecast`` False): its test set was each cohort's newest rows, or the age proxy's
    labels, not the vacancies the model serves, so ``within`` is not judged on it (None), as the
    gate does not let it protect a champion."""
    out = []
    for version, got in (live.get("by_version") or {}).items():
        off = dict(
            offline.get(version) or {"offline_auc": None, "offline_interval": None, "young_history": None}
        )
        gap = (
            got["auc"] - off["offline_auc"]
            if got.get("auc") is not None and off.get("offline_auc") is not None
            else None
        )
        forecast = off.get("offline_auc") is not None and not off.get("young_history")
        judged = got.get("n", 0) >= GOAL_CHAMPION_ROWS and gap is not None and forecast
        out.append(
            {
                "version": version,
                **off,
                "live_n": got.get("n", 0),
                "live_auc": got.get("auc"),
                "oracle_auc": got.get("oracle_auc"),
                "first": got.get("first"),
                "last": got.get("last"),
                "gap": gap,
                "forecast": forecast,
                "within": (abs(gap) <= GOAL_CHAMPION_GAP) if judged else None,  # type: ignore[arg-type]
            }
        )
    return out


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
        self.offline: dict[str, dict[str, Any]] = {}  # each served version's offline figure at publication
        self._market: Market | None = None

    def on_day(self, day: ReplayDay) -> None:
        self._store, self._history = day.store, day.history
        self._labels = day.settings.label_config
        self._market = day.market
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
        if self._serving is not None and served and self._serving.version not in self.offline:
            self.offline[self._serving.version] = offline_figure(self._serving)
        # a gate hook that ran decides, even when it has no champion yet (None): no stand-in then
        self._serving = day.shared["champion"] if "champion" in day.shared else self._stand_in(day)

    def _predict(self, day: ReplayDay) -> int:
        assert self._serving is not None and self._writer is not None
        keep = served_instances(day)
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
            labels = self._labels or LabelConfig()
            out["demand"] = live_demand(records, resolved, oracle=oracle_of(self._market, labels))
            out["champions"] = champions_offline_live(out["demand"], self.offline)
            proxy = {t["version"] for t in self.trained if t["demand_proxy"]}
            out["demand_by_champion"] = live_by_champion(records, resolved, proxy)
        self._tmp.cleanup()
        return out
