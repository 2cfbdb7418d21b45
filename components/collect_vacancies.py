"""Step 1: collect one run of vacancies into the store."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._image import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def collect_vacancies(
    store: str,
    s3_endpoint: str,
    source: str,
    queries: list,
    area: str,
    contact: str,
    demo_size: int,
    raw_run: Output[Dataset],
    allow_mixed_data: bool = False,
) -> str:
    """Collects vacancies (hh.ru API, a file dump, or the demo emulator) as a new raw run.

    Args:
        store: Store location: a folder or s3://bucket/prefix.
        s3_endpoint: S3/MinIO endpoint URL ("" for AWS or a local store).
        source: api, demo, or file:PATH.
        queries: Search texts; empty means the source's defaults.
        area: hh.ru area id; empty means the source's default.
        contact: Contact for the HH-User-Agent header.
        demo_size: Demo market size (vacancies opened per simulated day).
        raw_run: The run's items as JSON lines (gzip).
        allow_mixed_data: Add real data to a synthetic store or the other way round (refused otherwise).

    Returns:
        The run id.
    """
    from hhpulse.data.collect import collect
    from hhpulse.data.sources import make_source
    from hhpulse.data.store import open_store

    st = open_store(store, endpoint_url=s3_endpoint or None)
    result = collect(
        make_source(
            source, queries=queries or None, area=area or None, contact=contact or None, demo_size=demo_size
        ),
        st,
        allow_mixed=allow_mixed_data,
    )
    if result.stop_reason and not result.items:
        raise RuntimeError(f"collection stopped before anything was collected: {result.stop_reason}")
    with open(raw_run.path, "wb") as fh:
        fh.write(st.get_bytes(f"raw/{result.run_id}/vacancies.jsonl.gz"))
    raw_run.metadata.update({"run_id": result.run_id, "items": result.items, "complete": result.complete})
    return result.run_id
