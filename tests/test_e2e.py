"""The e2e driver's own logic (pipelines/e2e.py); `make e2e` runs it for real with containers."""

from __future__ import annotations

from pipelines.e2e import (
    AGENT,
    COMPILED,
    compare,
    compiled_image,
    logsink_container,
    predictor_container,
    v2_rows,
)


def _pred(salary, demand):
    return {
        "salary": {"cohort": max(salary, key=salary.get), "probabilities": salary},
        "demand": {"cohort": max(demand, key=demand.get), "probabilities": demand},
    }


def test_the_compiled_pipeline_names_one_image():
    assert compiled_image(COMPILED).rsplit("/", 1)[-1].startswith("hhpulse-pipeline:")


def test_compare_to_the_printed_digits():
    host = [_pred({"a": 0.123456, "b": 0.876544}, {"x": 1.0})]
    same = [_pred({"a": 0.1234561, "b": 0.8765439}, {"x": 1.0})]  # float32 noise below the 6th decimal
    assert compare(host, same, ["salary", "demand"], "v1") == 0
    off = [_pred({"a": 0.123457, "b": 0.876543}, {"x": 1.0})]
    assert compare(host, off, ["salary", "demand"], "v1") == 1
    assert compare(host, [], ["salary", "demand"], "v1") == 1


def test_v2_rows_follow_the_cohort_order():
    resp = {
        "outputs": [
            {"name": "salary_cohort", "shape": [2], "data": ["b", "a"]},
            {"name": "salary_probabilities", "shape": [2, 2], "data": [0.25, 0.75, 0.6, 0.4]},
        ]
    }
    rows = v2_rows(resp, ["salary"], {"salary": ["a", "b"]})
    assert rows == [
        {"salary": {"cohort": "b", "probabilities": {"a": 0.25, "b": 0.75}}},
        {"salary": {"cohort": "a", "probabilities": {"a": 0.6, "b": 0.4}}},
    ]


def test_predictor_container_is_the_kserve_container():
    isvc = {"spec": {"predictor": {"containers": [{"name": "kserve-container", "image": "i", "args": []}]}}}
    assert predictor_container(isvc)["image"] == "i"


def test_the_log_sink_container_is_the_chart_s():
    c = logsink_container("s3://hhpulse-e2e/store", "http://127.0.0.1:9000")
    assert c["command"] == ["hhpulse", "logsink"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert (
        env["HHPULSE_STORE"] == "s3://hhpulse-e2e/store"
        and env["HHPULSE_S3_ENDPOINT"] == "http://127.0.0.1:9000"
    )
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # the driver posts as the agent of the InferenceService the sink is configured to take events from
    assert (env["HHPULSE_LOGSINK_INFERENCESERVICE"], env["HHPULSE_LOGSINK_NAMESPACE"]) == (
        AGENT["inference_service"],
        AGENT["namespace"],
    )
