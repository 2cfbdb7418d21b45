"""Step 7: build the winners' bundle and gate it against the current champion."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Model, Output

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def select_winner(
    store: str,
    s3_endpoint: str,
    dataset: Input[Dataset],
    features: Input[Dataset],
    results: Input[Artifact],
    report: Input[HTML],
    xgb_models: Input[list[Model]],
    linear_models: Input[list[Model]],
    baseline_models: Input[list[Model]],
    margin: float,
    primary_metric: str,
    bundle: Output[Model],
    ece_margin: float = 0.02,
) -> bool:
    """Builds the model bundle and compares it with the champion on the same new test set.

    Args:
        store: Store location (for the champion).
        s3_endpoint: S3/MinIO endpoint URL ("" for AWS or a local store).
        dataset: The dataset from build_dataset.
        features: The matrices and vectorizer from featurize.
        results: Candidate metrics and winners from evaluate_candidates.
        xgb_models: The trained XGBoost candidates.
        linear_models: The trained linear candidates.
        baseline_models: Each task's TF-IDF + logistic regression baseline (always trained; it
            wins when no candidate ranks at least as well on validation).
        margin: How much better (mean primary metric) the challenger must be.
        primary_metric: The metric of the comparison (e.g. roc_auc_ovo).
        ece_margin: The most the challenger's top-label ECE may exceed the champion's (any task).
        bundle: The challenger's model bundle (with report.html: the evaluation report and the gate).
        report: The evaluate step's HTML report; it goes into the bundle as report.html with the
            gate's verdict appended.

    Returns:
        Whether the challenger wins (the version and the reason are in the bundle's metadata).
    """
    import json

    from hhpulse.flows.pipeline_steps import build_and_gate
    from hhpulse.model.dataset import Dataset as CoreDataset

    with open(results.path, encoding="utf-8") as fh:
        res = json.load(fh)
    with open(report.path, encoding="utf-8") as fh:
        report_html = fh.read()
    out = build_and_gate(
        store,
        s3_endpoint,
        CoreDataset.load(dataset.path),
        features.path,
        res,
        [m.path for m in [*xgb_models, *linear_models, *baseline_models]],
        bundle.path,
        margin,
        primary_metric,
        ece_margin,
        report_html=report_html,
    )
    bundle.metadata.update(out)
    print("gate: " + "\n      ".join(out["lines"]))
    return bool(out["challenger_wins"])
