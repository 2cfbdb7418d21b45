"""Step 2: the data contract report (fails the run over the bad-row threshold), then the run is
folded into the history."""

from kfp import dsl
from kfp.dsl import Markdown, Output

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def validate_vacancies(
    store: str, s3_endpoint: str, run_id: str, max_bad_fraction: float, report: Output[Markdown]
):
    """Validates a raw run against the data contract, quarantines bad rows, and folds the run into the history.

    Args:
        store: Store location: a folder or s3://bucket/prefix.
        s3_endpoint: S3/MinIO endpoint URL ("" for AWS or a local store).
        run_id: The collection run to validate.
        max_bad_fraction: Fail when more than this share of rows is bad.
        report: The validation report (Markdown).
    """
    from hhpulse.data.store import open_store
    from hhpulse.data.validate import ValidationFailed, validate_run

    st = open_store(store, endpoint_url=s3_endpoint or None)
    try:
        result = validate_run(st, run_id, max_bad_fraction=max_bad_fraction)
    except ValidationFailed as exc:
        with open(report.path, "w", encoding="utf-8") as fh:
            fh.write(exc.report.to_markdown())
        raise
    from hhpulse.data.history_store import fold_run

    folded = fold_run(st, run_id)  # after validation: the quarantined rows stay out of history
    print(folded.summary_line())
    with open(report.path, "w", encoding="utf-8") as fh:
        fh.write(result.to_markdown() + f"\n\n{folded.summary_line()}\n")
