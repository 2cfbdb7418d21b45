"""The one pipeline image every component runs in (built from images/pipeline.Dockerfile).

Not a component. ``PIPELINE_IMAGE`` is the name ``make images`` gives the local build
(``hhpulse-pipeline:<version>``, no registry); the registry, tag and pull secrets of a cluster
are compile options (``hhpulse compile --image-registry REG --image-tag TAG
--image-pull-secret NAME``, which the Helm chart passes from its ``image`` values), applied to
every task by :func:`pipelines.hhpulse_pipeline.build_pipeline`, never read from the
environment at import.
"""

from hhpulse import __version__

PIPELINE_IMAGE_NAME = "hhpulse-pipeline"
SERVING_IMAGE_NAME = "hhpulse-serving"


def image_ref(name: str, registry: str = "", tag: str = "") -> str:
    """``[registry/]name:tag``; the tag defaults to the package version (as ``make images`` tags)."""
    prefix = f"{registry.rstrip('/')}/" if registry else ""
    return f"{prefix}{name}:{tag or __version__}"


PIPELINE_IMAGE = image_ref(PIPELINE_IMAGE_NAME)
SERVING_IMAGE = image_ref(SERVING_IMAGE_NAME)
