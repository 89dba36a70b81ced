"""Prometheus metrics under the names gRPC dashboards expect (go-grpc-prometheus and
py-grpc-prometheus): grpc_server_started_total, grpc_server_handled_total and
grpc_server_handling_seconds, labelled grpc_type, grpc_service, grpc_method (and grpc_code). They
are served on their own port, so scraping never competes with gRPC traffic."""

import grpc
from prometheus_client import Counter, Histogram, start_http_server

STARTED = Counter(
    "grpc_server_started_total", "RPCs started on the server.", ["grpc_type", "grpc_service", "grpc_method"]
)
HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, whatever their status.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from receiving an RPC to answering it.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
UNARY = "unary"


class MethodMetrics:
    """The label children of one method, looked up once rather than on every call."""

    def __init__(self, service: str, method: str) -> None:
        self._labels = (UNARY, service, method)
        self._started = STARTED.labels(*self._labels)
        self._handling = HANDLING.labels(*self._labels)
        self._handled: dict[grpc.StatusCode, object] = {}

    def started(self) -> None:
        self._started.inc()

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        counter = self._handled.get(code)
        if counter is None:
            counter = self._handled[code] = HANDLED.labels(*self._labels, code.name)
        counter.inc()
        self._handling.observe(seconds)


_methods: dict[tuple[str, str], MethodMetrics] = {}


def for_method(service: str, method: str) -> MethodMetrics:
    key = (service, method)
    if key not in _methods:
        _methods[key] = MethodMetrics(service, method)
    return _methods[key]


def serve_metrics(port: int) -> None:
    if port:
        start_http_server(port)
