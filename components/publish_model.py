"""Step 8b: publish the bundle and move the champion pointer."""

from kfp import dsl
from kfp.dsl import Input, Model

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def publish_model(store: str, s3_endpoint: str, bundle: Input[Model]) -> str:
    """Writes the bundle to models/hhpulse/<version>/ and moves the champion pointer atomically,
    with a conditional write: if another run moved the pointer after this run's gate, the step
    fails and says so (the pointer stays; the challenger was never compared with the new champion).

    Args:
        store: Store location: a folder or s3://bucket/prefix.
        s3_endpoint: S3/MinIO endpoint URL ("" for AWS or a local store).
        bundle: The published fit's bundle from refit_winners (the winners refitted on every row).

    Returns:
        The storage URI of the published version.
    """
    from hhpulse.flows.pipeline_steps import publish_gated

    return publish_gated(store, s3_endpoint, bundle.path)
