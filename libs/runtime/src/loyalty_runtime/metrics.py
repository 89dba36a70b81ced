"""Prometheus metrics, served on their own port so scraping never competes with gRPC traffic."""

from prometheus_client import Counter, Histogram, start_http_server

RPC_HANDLED = Counter(
    "loyalty_grpc_server_handled_total", "RPCs completed, by method and status code", ["method", "code"]
)
RPC_LATENCY = Histogram(
    "loyalty_grpc_server_handling_seconds",
    "Time to answer an RPC",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def serve_metrics(port: int) -> None:
    if port:
        start_http_server(port)
