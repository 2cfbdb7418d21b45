"""Step 3: read the training window of the folded history, label both tasks, and split by time."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def build_dataset(
    store: str, s3_endpoint: str, random_split: bool, dataset: Output[Dataset], window_days: int = 180
):
    """Builds the labelled, time-split dataset of both tasks from the history's training window.

    Args:
        store: Store location: a folder or s3://bucket/prefix.
        s3_endpoint: S3/MinIO endpoint URL ("" for AWS or a local store).
        random_split: Use a random split instead of the time-ordered default.
        dataset: The dataset folder (parquet per task + dataset.json).
        window_days: Train on the open vacancies plus those closed in this many days before the newest run (0: all of history).
    """
    from hhpulse.config import LabelConfig, SplitConfig
    from hhpulse.data.history_store import fold_run, read_window
    from hhpulse.data.store import open_store
    from hhpulse.model.dataset import build_dataset as build

    st = open_store(store, endpoint_url=s3_endpoint or None)
    print(fold_run(st).summary_line())  # the validate step folded this run; this catches up on any other
    read = read_window(st, window_days if window_days > 0 else None)  # one version of the table
    hist = read.history
    ds = build(hist, read.rates, LabelConfig(), SplitConfig(random=random_split))
    ds.summary["history_window"] = read.window  # names the version: train --as-of reads it again
    ds.save(dataset.path)
    dataset.metadata.update({t: len(td.frame) for t, td in ds.tasks.items()})
    dataset.metadata["demand_proxy"] = bool(ds.summary.get("demand_proxy"))
    dataset.metadata["window_days"] = window_days
    dataset.metadata["history_rows"] = len(hist)
    dataset.metadata["history_version"] = read.window.get("version")
