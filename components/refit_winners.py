"""Step 8a: refit the winners on every labelled row for the published bundle (after the gate)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def refit_winners(
    store: str,
    s3_endpoint: str,
    dataset: Input[Dataset],
    heldout: Input[Model],
    device: str,
    bundle: Output[Model],
):
    """Refits each task's winner on train + validation + test, for the bundle that is published.

    The gate measured the held-out fit (``heldout``); this bundle keeps its version and
    figures, gets a calibrator fitted on time-ordered out-of-fold predictions (its prior chosen
    by a backtest on earlier slices), and records every row it saw in training_ids.npz.

    Args:
        store: Store location (whether the data is synthetic, for the model card).
        s3_endpoint: S3/MinIO endpoint URL ("" for AWS or a local store).
        dataset: The dataset from build_dataset.
        heldout: The held-out bundle that select_winner gated.
        device: XGBoost device: auto, cuda or cpu (falls back to the CPU without a GPU).
        bundle: The published fit's bundle.
    """
    from hhpulse.flows.pipeline_steps import refit_published
    from hhpulse.model.dataset import Dataset as CoreDataset

    out = refit_published(
        store, s3_endpoint, CoreDataset.load(dataset.path), heldout.path, bundle.path, device
    )
    bundle.metadata.update(out)
    print(f"refit: {out['rows']} rows (held-out fit: {out['heldout_rows']}); prior {out['prior_rule']}")
