"""The Sparkplug B schema: the committed generated code matches the committed .proto, and
values decode the way independent encoders write them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pysparkplug as psp
import pytest

from edge_agent.sparkplug import schema
from edge_agent.sparkplug.schema import DataType, Payload

PKG = Path(schema.__file__).parent


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    """`make proto` was run after the last change to sparkplug_b.proto."""
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PKG}", f"--python_out={tmp_path}", str(PKG / "sparkplug_b.proto")],
        check=True,
    )
    assert (tmp_path / "sparkplug_b_pb2.py").read_text() == (PKG / "sparkplug_b_pb2.py").read_text()


def test_same_schema_as_the_independent_implementation() -> None:
    # Both come from Eclipse Tahu's sparkplug_b.proto: the descriptors are byte for byte equal
    # (which also lets both live in one process's descriptor pool).
    from pysparkplug import _protobuf

    assert Payload.DESCRIPTOR.file.serialized_pb == _protobuf.Payload.DESCRIPTOR.file.serialized_pb


@pytest.mark.parametrize(
    ("dt", "value"),
    [(psp.DataType.INT8, -128), (psp.DataType.INT8, 127), (psp.DataType.INT16, -5), (psp.DataType.INT32, -2**31),
     (psp.DataType.INT64, -2**63), (psp.DataType.UINT32, 2**32 - 1), (psp.DataType.UINT64, 2**64 - 1),
     (psp.DataType.FLOAT, 1.5), (psp.DataType.DOUBLE, -1e300)],
)
def test_numeric_values_as_pysparkplug_encodes_them(dt: psp.DataType, value: float) -> None:
    m = Payload.Metric.FromString(psp.Metric(1, "x", dt, value=value).to_pb(include_dtype=True).SerializeToString())
    assert schema.numeric_value(m, int(dt)) == float(value)


def test_signed_integers_sign_extended_to_32_bits_also_decode() -> None:
    # Encoders that put an Int8/Int16 into the uint32 field as a 32-bit two's complement.
    m = Payload.Metric(datatype=DataType.Int8, int_value=(-5) & 0xFFFFFFFF)
    assert schema.numeric_value(m, DataType.Int8) == -5.0
    m = Payload.Metric(datatype=DataType.Int16, int_value=(-300) & 0xFFFFFFFF)
    assert schema.numeric_value(m, DataType.Int16) == -300.0


def test_null_and_wrong_field() -> None:
    assert schema.numeric_value(Payload.Metric(is_null=True), DataType.Double) is None
    with pytest.raises(ValueError):
        schema.numeric_value(Payload.Metric(string_value="7"), DataType.Double)


def test_ids_refused_in_config_and_device_ids_made_safe() -> None:
    from edge_agent.config import AgentConfig
    from edge_agent.sparkplug.devices import device_of

    for key in ("group_id", "edge_node_id", "primary_host_id"):
        for bad in ("a/b", "a+", "#", ""):
            with pytest.raises(ValueError):
                AgentConfig.model_validate({"sparkplug": {key: bad}})
    assert device_of("m1/temp", 1) == ("m1", "temp/")
    assert device_of("line1/m1/temp", 2) == ("line1:m1", "temp/")
    assert device_of("temp", 1) == ("temp", "")
    # + # / : % in a series' device part are encoded, so device ids are valid and distinct.
    assert device_of("a+b#c/x", 1)[0] == "a%2Bb%23c"
    assert device_of("a:b/c/x", 2)[0] != device_of("a/b:c/x", 2)[0]
    assert all(schema.valid_id(device_of(s, 2)[0]) for s in ("a/b", "+/#", "%/:", "/x"))
