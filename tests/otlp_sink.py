#!/usr/bin/env python3
"""A small OTLP/metrics receiver built only from the official `opentelemetry-proto` package and
grpcio: gRPC MetricsService/Export and HTTP POST /v1/metrics (protobuf, gzip or plain).

It is the "implementation we did not write" that kepler-rs's interop tests push to. Every
received request is appended to --out as one JSON line:
  {"transport": "grpc"|"http", "headers": {...}, "request": <ExportMetricsServiceRequest as JSON>}
(proto field names, 64-bit integers as strings, enums as integers). Once listening it prints
one line `READY grpc=<port> http=<port>` on stdout.

Fault injection for the retry tests: the first --fail requests are answered with --grpc-code
(a grpc.StatusCode name) or --http-status (with --retry-after seconds when given);
--partial N answers successes with a partial_success rejecting N data points.
"""

import argparse
import gzip
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc


class Recorder:
    def __init__(self, path, fail, partial):
        self.path = path
        self.lock = threading.Lock()
        self.fail_left = fail
        self.partial = partial

    def should_fail(self):
        with self.lock:
            if self.fail_left > 0:
                self.fail_left -= 1
                return True
            return False

    def record(self, transport, headers, request):
        line = json.dumps(
            {
                "transport": transport,
                "headers": headers,
                "request": json_format.MessageToDict(
                    request, preserving_proto_field_name=True, use_integers_for_enums=True
                ),
            }
        )
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def response(self):
        resp = metrics_service_pb2.ExportMetricsServiceResponse()
        if self.partial:
            resp.partial_success.rejected_data_points = self.partial
            resp.partial_success.error_message = "sink rejects some points on purpose"
        return resp


class MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, recorder, code):
        self.recorder = recorder
        self.code = code

    def Export(self, request, context):
        if self.code is not None and self.recorder.should_fail():
            context.abort(self.code, "sink fails this request on purpose")
        headers = {k: v for k, v in context.invocation_metadata()}
        self.recorder.record("grpc", headers, request)
        return self.recorder.response()


def make_http_handler(recorder, status, retry_after):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, code, body, extra=()):
            self.send_response(code)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if self.path != "/v1/metrics":
                self.reply(404, b"")
                return
            if self.headers.get("Content-Encoding", "") == "gzip":
                body = gzip.decompress(body)
            if status is not None and recorder.should_fail():
                extra = [("Retry-After", str(retry_after))] if retry_after is not None else []
                self.reply(status, b"", extra)
                return
            request = metrics_service_pb2.ExportMetricsServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception:  # noqa: BLE001 - any decode failure is a 400
                self.reply(400, b"")
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            recorder.record("http", headers, request)
            self.reply(200, recorder.response().SerializeToString())

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--fail", type=int, default=0)
    parser.add_argument("--grpc-code", default=None)
    parser.add_argument("--http-status", type=int, default=None)
    parser.add_argument("--retry-after", type=int, default=None)
    parser.add_argument("--partial", type=int, default=0)
    args = parser.parse_args()

    recorder = Recorder(args.out, args.fail, args.partial)
    code = getattr(grpc.StatusCode, args.grpc_code) if args.grpc_code else None
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsService(recorder, code), server)
    grpc_port = server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    server.start()

    http = ThreadingHTTPServer(
        ("127.0.0.1", args.http_port), make_http_handler(recorder, args.http_status, args.retry_after)
    )
    threading.Thread(target=http.serve_forever, daemon=True).start()

    print(f"READY grpc={grpc_port} http={http.server_address[1]}", flush=True)
    # Runs until the test kills it (or closes stdin).
    try:
        sys.stdin.read()
    finally:
        http.shutdown()
        server.stop(0)


if __name__ == "__main__":
    main()
