"""Writes the fuzzers' seed inputs: OTLP export requests encoded by the official protobuf
definitions (PyPI opentelemetry-proto), as protobuf and as proto3 JSON, covering every metric
type the hub handles, a Kepler container series, and awkward attribute keys.

Run from the repository root with the project venv:
    .venv/bin/python collector/fuzz/seeds/make_seeds.py
"""

import pathlib

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

HERE = pathlib.Path(__file__).parent


def kv(key, value):
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def request(metrics, resource=None):
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    for k, v in (resource or {"service.name": "kepler", "service.instance.id": "node-1"}).items():
        rm.resource.attributes.append(kv(k, v))
    sm = rm.scope_metrics.add()
    sm.scope.name = "kepler-rs"
    sm.scope.version = "0.1.0"
    sm.metrics.extend(metrics)
    return req


CONTAINER = {
    "container_id": "9c" * 32,
    "pod_name": "web-5d9c7b",
    "container_name": "nginx",
    "container_namespace": "default",
    "mode": "dynamic",
    "source": "rapl-sysfs",
}


def point(cls, attrs, **fields):
    p = cls(time_unix_nano=1_700_000_000_000_000_000, start_time_unix_nano=1_690_000_000_000_000_000, **fields)
    for k, v in attrs.items():
        p.attributes.append(kv(k, v))
    return p


def seeds():
    joules = m.Metric(name="kepler_container_joules_total", unit="J", description="energy")
    joules.sum.is_monotonic = True
    joules.sum.aggregation_temporality = m.AGGREGATION_TEMPORALITY_CUMULATIVE
    joules.sum.data_points.append(point(m.NumberDataPoint, CONTAINER, as_double=12.5))
    yield "kepler_container_sum", request([joules])

    delta = m.Metric(name="requests", unit="1")
    delta.sum.is_monotonic = True
    delta.sum.aggregation_temporality = m.AGGREGATION_TEMPORALITY_DELTA
    delta.sum.data_points.append(point(m.NumberDataPoint, {"route": "/a"}, as_int=3))
    updown = m.Metric(name="queue.depth", unit="{item}")
    updown.sum.is_monotonic = False
    updown.sum.aggregation_temporality = m.AGGREGATION_TEMPORALITY_CUMULATIVE
    updown.sum.data_points.append(point(m.NumberDataPoint, {"q": "x"}, as_int=-2))
    gauge = m.Metric(name="cpu.temperature", unit="Cel")
    gauge.gauge.data_points.append(point(m.NumberDataPoint, {"core": 1, "ok": True, "f": 0.5}, as_double=51.0))
    yield "delta_updown_gauge", request([delta, updown, gauge], {"service.name": "app", "cluster": "cluster2"})

    hist = m.Metric(name="http.server.duration", unit="ms")
    hist.histogram.aggregation_temporality = m.AGGREGATION_TEMPORALITY_CUMULATIVE
    hist.histogram.data_points.append(
        point(m.HistogramDataPoint, {"le": "x", "method": "GET"}, count=6, sum=21.0,
              bucket_counts=[1, 2, 3], explicit_bounds=[1.0, 5.0])
    )
    summary = m.Metric(name="rpc.latency", unit="s")
    q = point(m.SummaryDataPoint, {"quantile": "0.5"}, count=4, sum=2.0)
    q.quantile_values.add(quantile=0.5, value=0.4)
    q.quantile_values.add(quantile=0.99, value=1.2)
    summary.summary.data_points.append(q)
    expo = m.Metric(name="expo", unit="ms")
    expo.exponential_histogram.aggregation_temporality = m.AGGREGATION_TEMPORALITY_CUMULATIVE
    expo.exponential_histogram.data_points.append(point(m.ExponentialHistogramDataPoint, {}, count=1, scale=2))
    yield "histogram_summary_expo", request([hist, summary, expo])

    odd = m.Metric(name="9 odd.name/with-units", unit="By/s")
    odd.gauge.data_points.append(
        point(m.NumberDataPoint, {"__reserved": "a", "_x": "b", "a.b": "c", "a-b": "d", "job": "j"}, as_double=float("nan"))
    )
    yield "odd_keys", request([odd])


def main():
    for name, req in seeds():
        (HERE / "otlp_protobuf" / f"{name}.bin").write_bytes(req.SerializeToString())
        (HERE / "otlp_json" / f"{name}.json").write_text(json_format.MessageToJson(req))


if __name__ == "__main__":
    main()
