"""The Open Inference Protocol's raw tensors, decoded and checked without a server
(:mod:`hhpulse.serving.inputs`); tests/test_serving_clients.py sends them through real clients."""

from __future__ import annotations

import json
import struct

import pytest

from hhpulse.serving.inputs import Limits, RequestError, binary_request, decode_raw, requested_outputs

LIMITS = Limits(max_body_bytes=1000)


def elements(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def body(tensors, outputs=None, parameters=None) -> tuple[bytes, str]:
    """A binary-extension body: ``tensors`` are (name, datatype, shape, raw, declared size or None)."""
    header = {
        "inputs": [
            {
                "name": n,
                "datatype": d,
                "shape": s,
                "parameters": {"binary_data_size": len(raw) if size is None else size},
            }
            for n, d, s, raw, size in tensors
        ]
    }
    if outputs is not None:
        header["outputs"] = outputs
    if parameters is not None:
        header["parameters"] = parameters
    text = json.dumps(header).encode()
    return text + b"".join(raw for *_, raw, _ in tensors), str(len(text))


def test_bytes_elements_are_length_prefixed_little_endian():
    raw = elements("Доставка".encode(), b"", b"ok")
    assert decode_raw("responsibility", "BYTES", [3], raw) == ["Доставка".encode(), b"", b"ok"]
    assert decode_raw("responsibility", "BYTES", [3, 1], raw)[2] == b"ok"
    assert decode_raw("responsibility", "BYTES", [0], b"") == []


def test_fixed_size_datatypes_are_packed_little_endian():
    assert decode_raw("x", "FP64", [2], struct.pack("<2d", 0.5, 1.25)) == [0.5, 1.25]
    assert decode_raw("x", "INT32", [1, 2], struct.pack("<2i", -1, 7)) == [-1, 7]
    assert decode_raw("x", "BOOL", [2], b"\x01\x00") == [True, False]


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "reason", "message"),
    [
        ("BYTES", [1], struct.pack("<I", 9) + b"abc", "bad_binary_tensor", "element 0 declares 9 bytes"),
        ("BYTES", [2], elements(b"abcdef"), "bad_binary_tensor", "end before element 1 of 2"),
        ("BYTES", [1], elements(b"a") + b"zz", "bad_binary_tensor", "2 bytes left over"),
        ("BYTES", [10**12], b"abcd", "bad_binary_tensor", "more than its 4 bytes can hold"),
        ("FP32", [2], b"\x00" * 4, "bad_binary_tensor", "needs 8 bytes, got 4"),
        ("BF16", [1], b"\x00\x00", "bad_datatype", "unknown datatype 'BF16'"),
    ],
)
def test_a_tensor_that_does_not_hold_its_shape_is_refused(datatype, shape, raw, reason, message):
    with pytest.raises(RequestError) as info:
        decode_raw("responsibility", datatype, shape, raw)
    assert info.value.reason == reason and message in str(info.value) and info.value.status == 400


def test_a_binary_request_with_matching_sizes_gives_its_header():
    raw = elements("Доставка".encode(), b"ok")
    data, n = body([("responsibility", "BYTES", [2], raw, None)], outputs=[{"name": "salary_cohort"}])
    header = binary_request(data, n, LIMITS)
    assert header["inputs"][0]["parameters"]["binary_data_size"] == len(raw)
    assert header["outputs"] == [{"name": "salary_cohort"}]


def test_json_and_binary_inputs_mix():
    raw = elements(b"a")
    header = {
        "inputs": [
            {"name": "name", "datatype": "BYTES", "shape": [1], "data": ["Курьер"]},
            {
                "name": "responsibility",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": len(raw)},
            },
        ]
    }
    text = json.dumps(header).encode()
    assert binary_request(text + raw, str(len(text)), LIMITS)["inputs"][0]["data"] == ["Курьер"]


@pytest.mark.parametrize(
    ("case", "make", "reason", "message"),
    [
        ("header length not a count", lambda d, n: (d, "ten"), "bad_binary_header", "must be a byte count"),
        ("header length past the body", lambda d, n: (d, str(len(d) + 1)), "bad_binary_header", "has only"),
        ("header cut short", lambda d, n: (d, str(int(n) - 1)), "invalid_json", "is not valid JSON"),
        ("sizes short of the bytes", lambda d, n: (d + b"x", n), "bad_binary_size", "declare 5 bytes"),
        (
            "header nested deep",
            lambda d, n: (b"[" * 5000 + b"]" * 5000, "10000"),
            "json_too_deep",
            "deeper than 32",
        ),
        (
            "header with NaN",
            lambda d, n: (b'{"inputs": [NaN]}', "17"),
            "not_finite",
            "NaN is not a JSON number",
        ),
    ],
)
def test_the_header_and_the_sizes_are_checked(case, make, reason, message):
    data, n = body([("responsibility", "BYTES", [1], elements(b"a"), None)])
    with pytest.raises(RequestError) as info:
        binary_request(*make(data, n), LIMITS)
    assert info.value.reason == reason and message in str(info.value), case


@pytest.mark.parametrize(
    ("tensors", "extra", "message"),
    [
        ([("responsibility", "BYTES", [1], elements(b"a"), 99)], {}, "declare 99 bytes"),
        ([("responsibility", "BYTES", [1], b"", -1)], {}, "binary_data_size must be a byte count"),
        ([("responsibility", "BYTES", [1], b"", True)], {}, "binary_data_size must be a byte count"),
        ([("responsibility", "BYTES", [1], b"", 1001)], {}, "over the body limit of 1000"),
        ([("responsibility", "BYTES", [-1], b"", None)], {}, "negative dimension"),
        ([("responsibility", "BYTES", "1", b"", None)], {}, "'shape' must be a list of integers"),
        (
            [("responsibility", "BYTES", [1], elements(b"\xff"), None)],
            {},
            "responsibility[0]: not valid UTF-8",
        ),
        ([("responsibility", "BYTES", [1], elements(b"a"), None)], {"outputs": [{}]}, "each with a 'name'"),
    ],
)
def test_each_tensor_and_output_is_checked(tensors, extra, message):
    data, n = body(tensors, **extra)
    with pytest.raises(RequestError) as info:
        binary_request(data, n, LIMITS)
    assert message in str(info.value) and info.value.status == 400


def test_a_header_without_inputs_or_with_data_and_size_is_refused():
    for header, message in [
        ({"instances": ["a"]}, "no 'inputs' list"),
        ([1], "must be a JSON object"),
        ({"inputs": [{"name": "r", "datatype": "BYTES", "shape": [1]}]}, "neither 'data' nor"),
        (
            {
                "inputs": [
                    {
                        "name": "r",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": ["a"],
                        "parameters": {"binary_data_size": 0},
                    }
                ]
            },
            "both 'data' and",
        ),
    ]:
        text = json.dumps(header).encode()
        with pytest.raises(RequestError) as info:
            binary_request(text, str(len(text)), LIMITS)
        assert message in str(info.value)


OUTPUTS = ("salary_cohort", "salary_probabilities")


def test_requested_outputs_follow_the_request_and_binary_data_wins():
    assert requested_outputs(None, None, OUTPUTS) == ([(o, False) for o in OUTPUTS], False)
    assert requested_outputs([], {"binary_data_output": True}, OUTPUTS) == (
        [(o, True) for o in OUTPUTS],
        True,
    )
    asked = [("salary_probabilities", {"binary_data": False}), ("salary_cohort", {})]
    assert requested_outputs(asked, {"binary_data_output": True}, OUTPUTS)[0] == [
        ("salary_probabilities", False),
        ("salary_cohort", True),
    ]
    for bad, message in [
        (([("x", None)], None), "unknown output 'x'"),
        (([("salary_cohort", {"binary_data": "yes"})], None), "binary_data must be true or false"),
        ((None, {"binary_data_output": 1}), "binary_data_output must be true or false"),
    ]:
        with pytest.raises(RequestError, match=message):
            requested_outputs(*bad, OUTPUTS)
