"""Step 8c: create or patch the KServe InferenceService (or render it, locally)."""

from kfp import dsl
from kfp.dsl import Input, Model

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def deploy_model(
    store: str,
    s3_endpoint: str,
    bundle: Input[Model],
    model_uri: str,
    mode: str,
    namespace: str,
    service_name: str,
    serving_image: str,
    service_account: str,
    canary_traffic_percent: int,
    timeout_seconds: int,
    logger_url: str = "",
    model_name: str = "hhpulse",
    min_replicas: int = 1,
    max_replicas: int = 3,
    resources: dict = {},  # noqa: B006 - KFP reads defaults
    image_pull_secrets: list = [],  # noqa: B006
    grpc_port: int = 0,
) -> str:
    """Deploys the published version as a KServe InferenceService (the step owns it; the Helm chart
    passes its serving values here as pipeline parameters).

    Args:
        store: Store location: a folder or s3://bucket/prefix.
        s3_endpoint: S3/MinIO endpoint URL ("" for AWS or a local store).
        bundle: The published bundle (its MANIFEST.json names the version).
        model_uri: The version's storage URI (storageUri of the predictor).
        mode: apply (create or patch on the cluster, wait for Ready) or render (write the manifest to the store).
        namespace: The InferenceService's namespace.
        service_name: The InferenceService's name.
        serving_image: The predictor image.
        service_account: The predictor's ServiceAccount (its Secret carries the S3 credentials and endpoint).
        canary_traffic_percent: 1-99 sends that share of requests to the new version as a canary while the previous version serves the rest; 0 (or 100) promotes the new version fully.
        timeout_seconds: How long to wait for Ready before rolling back.
        logger_url: URL of hhpulse logsink for KServe's logger (mode all: every request and its response as CloudEvents); empty: no logger.
        model_name: The model's name in the predictor's URLs.
        min_replicas: The predictor's minimum replicas.
        max_replicas: The predictor's maximum replicas.
        resources: The predictor container's resources ({"requests": {...}, "limits": {...}}; empty: the defaults).
        image_pull_secrets: Secrets for pulling the predictor image.
        grpc_port: Also serve gRPC (the Open Inference Protocol) on this container port, named h2c; 0: HTTP only.

    Returns:
        The service URL (apply) or the manifest's location (render).
    """
    from hhpulse.data.store import open_store
    from hhpulse.flows.deploy import DEFAULT_RESOURCES, DeployValues, deploy, render_to_store
    from hhpulse.model.bundle import verify_manifest

    version = verify_manifest(bundle.path)["version"]
    values = DeployValues(
        name=service_name,
        namespace=namespace,
        image=serving_image,
        service_account=service_account,
        model_name=model_name,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        resources=resources or DEFAULT_RESOURCES,
        image_pull_secrets=tuple(image_pull_secrets),
        canary_traffic_percent=canary_traffic_percent,
        logger_url=logger_url or None,
        grpc_port=grpc_port or None,
    )
    st = open_store(store, endpoint_url=s3_endpoint or None)
    if mode == "render":
        return render_to_store(st, values, version=version, storage_uri=model_uri)
    return deploy(st, values, version=version, storage_uri=model_uri, timeout_s=timeout_seconds).url
