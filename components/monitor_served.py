"""Step 3b: monitor the served traffic against the champion, after the history is updated."""

from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def monitor_served(store: str, s3_endpoint: str, metrics: Output[Metrics], report: Output[HTML]) -> bool:
    """Reads the served prediction log since the last run and in total: volume, the cohort mix
    against the training mix, input drift, and live demand accuracy against the labels the
    history has resolved since. Saves monitor/reports/<until>.json and moves the watermark.

    Args:
        store: Store location: a folder or s3://bucket/prefix.
        s3_endpoint: S3/MinIO endpoint URL ("" for AWS or a local store).
        metrics: The monitor's figures, <window>.<figure> (window: since_last_run or total).
        report: The "Served traffic" section as a page of its own.

    Returns:
        Whether a drift was flagged (the default thresholds of hhpulse monitor).
    """
    from hhpulse.data.store import open_store
    from hhpulse.watch.monitor import metrics_of, monitor_html, run_monitor

    # the step advances the watermark: the next run's "since the last run" starts here
    out = run_monitor(open_store(store, endpoint_url=s3_endpoint or None), save=True)
    for name, value in metrics_of(out).items():
        metrics.log_metric(name, value)
    with open(report.path, "w", encoding="utf-8") as fh:
        fh.write("<html><body style='font-family:sans-serif'>" + monitor_html(out) + "</body></html>")
    return bool(out["drift"])
