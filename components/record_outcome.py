"""Exit handler: record how the run ended in the store."""

from kfp import dsl
from kfp.dsl import PipelineTaskFinalStatus

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def record_outcome(store: str, s3_endpoint: str, run_id: str, status: PipelineTaskFinalStatus):
    """Writes runs/<time>-<run id>/outcome.json: success or failure, the failed step, and the reason.

    Args:
        store: Store location: a folder or s3://bucket/prefix.
        s3_endpoint: S3/MinIO endpoint URL ("" for AWS or a local store).
        run_id: The run's id (the pipeline passes KFP's job id), so every run gets its own record.
        status: The pipeline's final status (filled in by KFP).
    """
    from hhpulse.flows.outcome import record_outcome as record

    record(
        store,
        s3_endpoint,
        status.state,
        status.pipeline_job_resource_name,
        status.pipeline_task_name,
        status.error_code,
        status.error_message,
        run_id=run_id,
    )
