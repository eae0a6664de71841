"""Sends one batch of metrics to the hub with the OpenTelemetry Python SDK (an independent OTLP
implementation): a counter, an up-down counter, a gauge and a histogram, over the exporter named
on the command line. Exits 0 only when the exporter reports SUCCESS.

usage: otlp_send.py {grpc|http-protobuf|http-json} ENDPOINT [SERVICE_NAME [CLUSTER_ATTRIBUTE]]
Compression and headers come from the standard OTEL_EXPORTER_OTLP_METRICS_* variables.
"""

import sys

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource


def exporter(transport, endpoint):
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=endpoint, insecure=not endpoint.startswith("https"))
    if transport == "http-protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=endpoint)
    if transport == "http-json":
        from opentelemetry.exporter.otlp.json.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=endpoint)
    raise SystemExit(f"unknown transport {transport}")


def main():
    transport, endpoint = sys.argv[1], sys.argv[2]
    service = sys.argv[3] if len(sys.argv) > 3 else f"interop-{transport}"
    reader = InMemoryMetricReader()
    resource = Resource.create(
        {
            "service.name": service,
            "service.instance.id": "instance-1",
            "host.name": "interop-host",
            "k8s.node.name": "node-a",
        }
    )
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("interop.meter", "1.2.3")
    attrs = {"transport": transport, "k8s.pod.name": "pod-1", "http.status_code": 200}
    if len(sys.argv) > 4:
        attrs["cluster"] = sys.argv[4]

    meter.create_counter("interop.energy", unit="J", description="Energy used.").add(42.5, attrs)
    meter.create_up_down_counter("interop.queue.depth", unit="{item}").add(-3, attrs)
    meter.create_gauge("interop.temperature", unit="Cel").set(21.5, attrs)
    latency = meter.create_histogram("interop.latency", unit="ms")
    for value in (3, 7, 120):
        latency.record(value, attrs)

    data = reader.get_metrics_data()
    result = exporter(transport, endpoint).export(data)
    provider.shutdown()
    if result != MetricExportResult.SUCCESS:
        print(f"export over {transport} to {endpoint} failed: {result}", file=sys.stderr)
        sys.exit(1)
    print(f"sent over {transport}")


if __name__ == "__main__":
    main()
