"""Step 4: fit the TF-IDF vectorizer on the training split and build the matrices."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def featurize(dataset: Input[Dataset], features: Output[Dataset]):
    """Fits the vectorizer on train (razdel + TF-IDF) and writes every split's matrix.

    Args:
        dataset: The dataset from build_dataset.
        features: vectorizer/ plus one folder of npz matrices per task.
    """
    import os

    from hhpulse.model.dataset import Dataset as CoreDataset
    from hhpulse.model.train import featurize as fit

    vec, sets = fit(CoreDataset.load(dataset.path))
    vec.save(os.path.join(features.path, "vectorizer"))
    for task, fs in sets.items():
        fs.save(os.path.join(features.path, task))
    features.metadata["terms"] = vec.n_features
