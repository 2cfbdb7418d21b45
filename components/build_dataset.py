"""Step 3: rebuild the history, label both tasks, and split by time."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def build_dataset(store: str, s3_endpoint: str, random_split: bool, dataset: Output[Dataset]):
    """Builds the labelled, time-split dataset of both tasks from the updated history.

    Args:
        store: Store location: a folder or s3://bucket/prefix.
        s3_endpoint: S3/MinIO endpoint URL ("" for AWS or a local store).
        random_split: Use a random split instead of the time-ordered default.
        dataset: The dataset folder (parquet per task + dataset.json).
    """
    from hhpulse.config import LabelConfig, SplitConfig
    from hhpulse.dataset import build_dataset as build
    from hhpulse.history import rates_by_run, rebuild_history
    from hhpulse.store import open_store

    st = open_store(store, endpoint_url=s3_endpoint or None)
    ds = build(rebuild_history(st), rates_by_run(st), LabelConfig(), SplitConfig(random=random_split))
    ds.save(dataset.path)
    dataset.metadata.update({t: len(td.frame) for t, td in ds.tasks.items()})
    dataset.metadata["demand_proxy"] = bool(ds.summary.get("demand_proxy"))
