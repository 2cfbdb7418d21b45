"""Step 5b: train one task's TF-IDF + logistic regression baseline (every run, one per task)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train_baseline(features: Input[Dataset], task: str, model: Output[Model]):
    """Trains the task's baseline: plain TF-IDF + logistic regression (no class weights) on the
    training rows without the field-dropout copies, over the same features as the candidates.
    It competes on validation like them and wins when none ranks at least as well.

    Args:
        features: The matrices from featurize.
        task: salary or demand.
        model: The trained baseline (npz, plus model.json).
    """
    import os

    from hhpulse.config import baseline_candidate
    from hhpulse.model.train import FeatureSet, fit_on

    cfg = baseline_candidate(task)
    print(f"hhpulse step: train baseline ({task})")
    cand = fit_on(FeatureSet.load(os.path.join(features.path, task)), cfg, device="cpu")
    cand.save(model.path)
    model.metadata.update(
        {"name": cfg.name, "task": cfg.task, "kind": cfg.kind, "baseline": True, **cand.info}
    )
