"""Step 6: compare every candidate, log metrics for the Kubeflow UI, and report drift."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate_candidates(
    store: str,
    s3_endpoint: str,
    dataset: Input[Dataset],
    features: Input[Dataset],
    xgb_models: Input[list[Model]],
    linear_models: Input[list[Model]],
    baseline_models: Input[list[Model]],
    primary_metric: str,
    metrics: Output[Metrics],
    salary_metrics: Output[ClassificationMetrics],
    demand_metrics: Output[ClassificationMetrics],
    report: Output[HTML],
    results: Output[Artifact],
    top_terms: Output[Markdown],
):
    """Scores every candidate, picks each task's winner on validation, and reports drift.

    Args:
        store: Store location (for the champion's data profile).
        s3_endpoint: S3/MinIO endpoint URL ("" for AWS or a local store).
        dataset: The dataset from build_dataset.
        features: The matrices from featurize.
        xgb_models: The trained XGBoost candidates.
        linear_models: The trained linear candidates.
        baseline_models: Each task's TF-IDF + logistic regression baseline (always trained; it
            wins when no candidate ranks at least as well on validation).
        primary_metric: The validation metric that picks winners (e.g. roc_auc_ovo).
        metrics: Every candidate's scores: validation and test, with all fields and with
            responsibility alone (val_resp, test_resp), and the selection score.
        salary_metrics: The salary winner's confusion matrix and ROC curve.
        demand_metrics: The demand winner's confusion matrix and ROC curve.
        report: The comparison table, plots and drift section.
        results: JSON of every candidate's metrics and the winners (for select_winner).
        top_terms: The strongest terms toward and away from each salary cohort (Markdown).
    """
    import json
    import os

    from hhpulse.flows.pipeline_steps import evaluate_all
    from hhpulse.model.dataset import Dataset as CoreDataset

    ds = CoreDataset.load(dataset.path)
    out = evaluate_all(
        store,
        s3_endpoint,
        ds,
        features.path,
        [m.path for m in [*xgb_models, *linear_models, *baseline_models]],
        primary_metric,
    )
    for task, res in out["results"].items():
        for name, c in res["candidates"].items():
            for part in ("val", "val_resp", "test", "test_resp"):
                v = c["metrics"].get(part, {}).get(primary_metric)
                if v is not None:
                    metrics.log_metric(f"{name}.{part}.{primary_metric}", round(v, 4))
            if c.get("selection_score") is not None:
                metrics.log_metric(f"{name}.selection_score", round(c["selection_score"], 4))
        cm = salary_metrics if task == "salary" else demand_metrics
        win = out["winner_curves"][task]
        cm.log_confusion_matrix(win["classes"], win["confusion_matrix"])
        if win["roc"]:
            cm.log_roc_curve(win["roc"]["fpr"], win["roc"]["tpr"], win["roc"]["thresholds"])
    for task, c in out["calibration"].items():
        for when in ("before", "after"):
            m = c.get("test", {}).get(when, {})
            for key in ("ece", "brier", "log_loss"):
                if m.get(key) is not None:
                    metrics.log_metric(f"{task}.winner.test.{key}.{when}_calibration", round(m[key], 4))
            if m.get("mix"):
                metrics.log_metric(
                    f"{task}.winner.test.mix_error.{when}_calibration", round(m["mix"]["max_abs_error"], 4)
                )
    with open(top_terms.path, "w", encoding="utf-8") as fh:
        fh.write(out["top_terms_md"] or "No salary model in this run.\n")
    with open(report.path, "w", encoding="utf-8") as fh:
        fh.write(out["html"])
    os.makedirs(os.path.dirname(results.path), exist_ok=True)
    with open(results.path, "w", encoding="utf-8") as fh:
        json.dump(out["results"], fh, ensure_ascii=False, default=str)
