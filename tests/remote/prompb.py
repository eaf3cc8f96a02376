"""`prometheus.WriteRequest` message classes built at run time from a descriptor of the public prompb schema
(types.proto + remote.proto subset: Label, Sample, TimeSeries, WriteRequest), to check capacityd's
hand-written encoder against the reference protobuf implementation, and to decode what a receiver got."""

from __future__ import annotations

from typing import Any

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _message_classes() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(name="capacityd_test_prompb.proto", package="prometheus",
                                              syntax="proto3")  # fmt: skip

    def message(name: str, *fields: tuple[str, int, int, int, str | None]) -> None:
        m = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            f = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = type_name

    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    message("Label", ("name", 1, _F.TYPE_STRING, opt, None), ("value", 2, _F.TYPE_STRING, opt, None))
    message("Sample", ("value", 1, _F.TYPE_DOUBLE, opt, None), ("timestamp", 2, _F.TYPE_INT64, opt, None))
    message("TimeSeries", ("labels", 1, _F.TYPE_MESSAGE, rep, ".prometheus.Label"),
            ("samples", 2, _F.TYPE_MESSAGE, rep, ".prometheus.Sample"))  # fmt: skip
    message("WriteRequest", ("timeseries", 1, _F.TYPE_MESSAGE, rep, ".prometheus.TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{name}"))
            for name in ("Label", "Sample", "TimeSeries", "WriteRequest")}  # fmt: skip


CLASSES = _message_classes()
WriteRequest = CLASSES["WriteRequest"]


def decode(body: bytes) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    """A snappy-compressed WriteRequest as [(labels, [(timestamp ms, value)])]."""
    request = WriteRequest()
    request.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    return [({label.name: label.value for label in ts.labels}, [(s.timestamp, s.value) for s in ts.samples])
            for ts in request.timeseries]  # fmt: skip
