"""How a pipeline run ended: ``runs/<UTC time>-<8 hex>/outcome.json``, one record per run.

The exit handler writes it (:func:`record_outcome`); a runner that knows more than KFP's final
status (``hhpulse run`` knows the failed step and its error) completes it
(:func:`complete_outcome`). Kept apart from :mod:`hhpulse.flows.pipeline_steps` so the exit
handler does not import the model stack.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from hhpulse.data.store import open_store

if TYPE_CHECKING:
    from hhpulse.data.store import Store

log = logging.getLogger(__name__)


def _resolved(run_id: str | None) -> str | None:
    """The run id, or None when there is none (or a placeholder the backend left unresolved)."""
    run_id = (run_id or "").strip()
    return run_id if run_id and not run_id.startswith("{{") else None


def run_hex(run_id: str | None) -> str:
    """Eight hex digits for a run's folder, the style of raw run ids (``...Z-582a7507``): a KFP
    run's UUID gives its first eight, kfp.local's random decimal id its value in hex, anything
    else a hash of it; no run id, eight random ones."""
    ident = _resolved(run_id)
    if ident is None:
        return secrets.token_hex(4)
    if ident.isdigit():
        return f"{int(ident) % 16**8:08x}"
    digits = ident.replace("-", "").lower()
    if len(digits) >= 8 and all(c in "0123456789abcdef" for c in digits):
        return digits[:8]
    return hashlib.sha256(ident.encode()).hexdigest()[:8]


def outcome_folder(run_id: str | None, job: str | None, when: datetime) -> str:
    """``runs/<UTC time>-<8 hex>/`` (:func:`run_hex`): one folder per pipeline run, listed in
    time order; ``outcome.json`` inside keeps the full run id and job."""
    return f"runs/{when.strftime('%Y%m%dT%H%M%SZ')}-{run_hex(run_id)}/"


def record_outcome(
    store: str,
    s3_endpoint: str,
    state: str,
    job: str | None,
    task: str | None,
    code: int | None,
    message: str | None,
    run_id: str | None = None,
) -> str:
    """Write ``runs/<time>-<run id>/outcome.json`` (a new folder per run) and return its key.

    ``run_id`` is the KFP run's id (the ``{{$.pipeline_job_uuid}}`` placeholder); ``job``,
    ``task`` and ``message`` are what KFP's final status says. For a failure inside the exit
    handler that is only the handler's group (``exit-handler-1``) and a generic message;
    a runner that knows the step that failed and why completes the record with
    :func:`complete_outcome`.
    """
    st = open_store(store, endpoint_url=s3_endpoint or None)
    now = datetime.now(timezone.utc)
    ok = str(state).upper() in ("SUCCEEDED", "SUCCESS")
    doc = outcome_doc(
        state,
        run_id=run_id,
        job=job,
        failed_step=None if ok else task,
        reason=None if ok else (message or f"error code {code}"),
        when=now,
    )
    key = outcome_folder(run_id, job, now) + "outcome.json"
    st.put_json(key, doc)
    log.info("run outcome %s -> %s", state, st.uri(key))
    return key


def outcome_doc(
    state: str,
    *,
    run_id: str | None,
    job: str | None,
    failed_step: str | None,
    reason: str | None,
    when: datetime,
    host: str | None = None,
) -> dict[str, Any]:
    """The outcome record's fields (one home for its format): ``state``, ``succeeded``,
    ``run_id``, ``pipeline_job``, ``failed_step``, ``reason``, ``recorded_at``, ``host``."""
    ok = str(state).upper() in ("SUCCEEDED", "SUCCESS")
    return {
        "state": state,
        "succeeded": ok,
        "run_id": _resolved(run_id),
        "pipeline_job": job,
        "failed_step": None if ok else failed_step,
        "reason": None if ok else reason,
        "recorded_at": when.isoformat(timespec="seconds"),
        "host": os.environ.get("HOSTNAME", "") if host is None else host,
    }


def complete_outcome(store: Store, key: str, **fields: Any) -> dict[str, Any]:
    """Add what the runner knows (the failed step, its error, the log) to an outcome record."""
    doc = {**store.get_json(key), **fields}
    store.put_json(key, doc)
    return doc
