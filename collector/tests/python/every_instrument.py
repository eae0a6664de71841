"""Sends one batch with every synchronous and asynchronous instrument kind of the OpenTelemetry
Python SDK over OTLP/gRPC: names and units that need translating, attributes of every type,
resource attributes beyond the identity, and two instrumentation scopes. The values are scaled by
the SCALE argument, so that a second run with a smaller scale is a restarted process whose
counters went down (a reset). Exits 0 only when the exporter reports SUCCESS.

usage: every_instrument.py ENDPOINT SCALE
"""

import sys

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource


def main():
    endpoint, scale = sys.argv[1], float(sys.argv[2])
    reader = InMemoryMetricReader()
    resource = Resource.create(
        {
            "service.name": "fl_sidecar",
            "service.namespace": "energy",
            "service.instance.id": "pod-7",
            "deployment.environment": "test",
            "host.arch": "amd64",
            "k8s.pod.uid": "5f1a8d2e-3c4b-4f6a-9e2d-0b1c2d3e4f50",
        }
    )
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("differential.meter", "2.0.1")
    other = provider.get_meter("second.scope")
    attrs = {
        "cluster": "cluster3",
        "k8s.pod.name": "pod-7",
        "http.status_code": 200,
        "ratio": 0.25,
        "ok": True,
        "tags": ["a", "b"],
    }

    meter.create_counter("diff.energy", unit="J", description="Energy used.").add(
        10.5 * scale, attrs
    )
    meter.create_counter("requests.total.count", unit="{request}").add(3 * scale, attrs)
    meter.create_counter("http.requests", unit="1").add(7 * scale, attrs)
    meter.create_up_down_counter("queue.depth", unit="{item}").add(-2 * scale, attrs)
    meter.create_gauge("cpu.utilization", unit="1", description="Share of CPU.").set(
        0.5 * scale, attrs
    )
    meter.create_gauge("room.temperature", unit="Cel").set(21.5 * scale, attrs)
    latency = meter.create_histogram(
        "http.server.duration", unit="ms", description="Request latency."
    )
    for value in (3, 7, 120, 4000):
        latency.record(value * scale, attrs)
    sizes = other.create_histogram("odd.metric-name/with.slash", unit="By/s")
    sizes.record(512 * scale, {"cluster": "cluster3", "2xx": "yes"})
    meter.create_counter("Mixed.Case-name", unit="s").add(9 * scale, {"cluster": "cluster3"})

    def observe_counter(_options):
        return [Observation(100 * scale, {"cluster": "cluster3", "cpu": 0})]

    def observe_updown(_options):
        return [Observation(-5 * scale, {"cluster": "cluster3"})]

    def observe_gauge(_options):
        return [
            Observation(1.5 * scale, {"cluster": "cluster3", "zone": "package"}),
            Observation(0.5 * scale, {"cluster": "cluster3", "zone": "dram"}),
        ]

    meter.create_observable_counter("process.cpu.time", [observe_counter], unit="s")
    meter.create_observable_up_down_counter("memory.usage", [observe_updown], unit="By")
    meter.create_observable_gauge("power.draw", [observe_gauge], unit="W")

    data = reader.get_metrics_data()
    result = OTLPMetricExporter(endpoint=endpoint, insecure=True).export(data)
    provider.shutdown()
    if result != MetricExportResult.SUCCESS:
        print(f"export to {endpoint} failed: {result}", file=sys.stderr)
        sys.exit(1)
    print("sent")


if __name__ == "__main__":
    main()
