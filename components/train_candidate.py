"""Step 5: train one candidate configuration (fanned out with ParallelFor)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train_candidate(features: Input[Dataset], candidate: dict, device: str, model: Output[Model]):
    """Trains one candidate on its task's training split, early-stopped on validation.

    Args:
        features: The matrices from featurize.
        candidate: {"name", "task", "kind", "params", "field_dropout"} from the candidates config,
            or a task's TF-IDF + logistic regression baseline.
        device: auto, cpu or cuda (cuda falls back to the CPU when no GPU is present).
        model: The trained candidate (XGBoost UBJ or npz, plus model.json).
    """
    import os

    from hhpulse.config import CandidateConfig
    from hhpulse.model.train import FeatureSet, fit_on

    cfg = CandidateConfig.from_dict(candidate)
    print(f"hhpulse step: train {'XGBoost' if cfg.kind == 'xgboost' else 'linear'} candidate ({cfg.task})")
    cand = fit_on(FeatureSet.load(os.path.join(features.path, cfg.task)), cfg, device=device)
    cand.save(model.path)
    model.metadata.update({"name": cfg.name, "task": cfg.task, "kind": cfg.kind, **cand.info})
