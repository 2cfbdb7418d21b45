"""The fault-injecting proxy itself, in front of moto's S3 server: each fault does what it says."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from faultproxy import FaultProxy


@pytest.fixture
def proxied(s3_env, s3_bucket):
    with FaultProxy(s3_env) as proxy:
        client = boto3.client(
            "s3",
            endpoint_url=proxy.url,
            region_name="us-east-1",
            config=Config(retries={"mode": "standard", "max_attempts": 3}, read_timeout=5, connect_timeout=5),
        )
        yield proxy, client, s3_bucket


def test_a_dropped_reply_was_applied_and_the_retry_sees_it(proxied):
    proxy, s3, bucket = proxied
    rule = proxy.add("drop_reply", method="PUT", path=r"/state\.json$")
    s3.put_object(Bucket=bucket, Key="state.json", Body=b"v1")  # retried after the lost reply
    assert rule.hits == 1
    assert s3.get_object(Bucket=bucket, Key="state.json")["Body"].read() == b"v1"
    assert [e[2].split(" ")[0] for e in proxy.log if e[0] == "PUT"] == ["drop_reply", "200"]


def test_a_conditional_write_whose_reply_is_lost_looks_lost_on_retry(proxied):
    """The case shared state must handle: If-None-Match applied, reply lost, the retry gets 412."""
    proxy, s3, bucket = proxied
    proxy.add("drop_reply", method="PUT", header="If-None-Match")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="claim.json", Body=b"mine", IfNoneMatch="*")
    assert err.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="claim.json")["Body"].read() == b"mine"  # it was ours


def test_an_injected_5xx_never_reaches_the_server(proxied):
    proxy, s3, bucket = proxied
    rule = proxy.add("error:503", method="PUT", times=None)
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert rule.hits >= 2 and rule.hits == len([e for e in proxy.log if e[0] == "PUT"])  # every attempt
    proxy.clear()
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_reset_before_forwarding_writes_nothing_and_skip_counts_matches(proxied):
    proxy, s3, bucket = proxied
    rule = proxy.add("reset", method="PUT", skip=1)
    s3.put_object(Bucket=bucket, Key="a", Body=b"1")  # the first match is skipped
    s3.put_object(Bucket=bucket, Key="b", Body=b"2")  # reset once, then retried
    assert rule.hits == 1 and rule.seen == 3
    assert [e[2] for e in proxy.log if e[0] == "PUT"] == ["200", "reset", "200"]


def test_a_delay_then_answers_and_reset_after_applies(proxied):
    proxy, s3, bucket = proxied
    proxy.add("delay:0.2", method="GET")
    proxy.add("reset_after", method="PUT")
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"
    assert ("PUT", f"/{bucket}/k", "reset_after (upstream said 200)") in proxy.log


def test_rules_are_checked():
    with pytest.raises(ValueError, match="unknown fault"):
        FaultProxy("http://127.0.0.1:1").add("explode")
    with pytest.raises(ValueError, match="needs a value"):
        FaultProxy("http://127.0.0.1:1").add("error")
