"""The one pipeline image every component runs in (built from images/pipeline.Dockerfile).

Not a component. The tag is pinned to the package version; the registry is a compile
option (``hhpulse compile --image-registry``), never an environment variable read at import.
"""

from hhpulse import __version__

DEFAULT_REGISTRY = "ghcr.io/hhpulse"
PIPELINE_IMAGE = f"{DEFAULT_REGISTRY}/hhpulse-pipeline:{__version__}"
