"""JSON over HTTP for backends that do not speak gRPC: the Connect protocol's JSON forms
(connectrpc.com/docs/protocol), generated from the gateway's protos and the admin API it forwards to
the services (proxy.py), plus an OpenAPI document. Unary RPCs take and answer plain
`application/json`; server-streaming ones (exports) Connect's `application/connect+json` envelopes:
each message framed as one flags byte and a 4-byte big-endian length, the stream closed by an
end-of-stream frame (flag 0x02) whose JSON carries the error, if any, so a failure after the first
chunk still reaches the caller with its code and reason.

Why Connect rather than REST routes from google.api.http annotations: Connect maps every RPC
mechanically (`POST /<package.Service>/<Method>`, the request message as canonical protobuf JSON in
the body, the response message as JSON back), so no route is designed by hand, none can drift from
the proto, a new RPC is reachable the day it is added, and Connect's client libraries and plain
curl both work. Its errors carry the gRPC code and the same google.rpc details (ErrorInfo with the
reason, BadRequest, RetryInfo). REST transcoding would need a route and verb designed per RPC and the
annotation protos vendored, for URLs nobody here needs.

Each request is forwarded to this process's own gRPC port, so the call guard (authentication, rate
limits, validation, deadlines, error mapping) is exactly the one gRPC callers get; the cost is one
loopback hop of CPU per HTTP call.
"""

import asyncio
import base64
import json
import logging
import struct

import grpc
from aiohttp import web
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from grpc_status import rpc_status

from loyalty.gateway.v1 import admin_service_pb2, checkout_service_pb2, customer_service_pb2
from loyalty_gateway import proxy
from loyalty_gateway.domain import admin_api
from loyalty_runtime.context import AUTHORIZATION_HEADER, TENANT_HEADER

log = logging.getLogger("loyalty.gateway.http")

SERVICES = [
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (checkout_service_pb2, "CheckoutService"),
        (customer_service_pb2, "CustomerService"),
        (admin_service_pb2, "AdminService"),
    )
]
# Every RPC of the gateway's own services and of the admin API it forwards (proxy.py).
METHODS = [
    *(method for service in SERVICES for method in service.methods),
    *(
        service.methods_by_name[name]
        for service in proxy.SERVICES
        for name in admin_api.TABLE[service.full_name]
    ),
]
MAX_BODY = 1024 * 1024
UNARY_TYPE, STREAM_TYPE = "application/json", "application/connect+json"
ENVELOPE = struct.Struct(">BI")  # Connect's frame header: flags, length
END_STREAM = 0x02
# Connect's code names and HTTP statuses (connectrpc.com/docs/protocol#error-codes).
HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _error_body(code: grpc.StatusCode, message: str, details=()) -> dict:
    body = {"code": code.name.lower(), "message": message}
    if details:
        body["details"] = list(details)
    return body


def _error(code: grpc.StatusCode, message: str, details=()) -> web.Response:
    return web.json_response(_error_body(code, message, details), status=HTTP_STATUS.get(code, 500))


def _frame(flags: int, payload: bytes) -> bytes:
    return ENVELOPE.pack(flags, len(payload)) + payload


def _unframe(body: bytes) -> bytes | None:
    """The one uncompressed message of a server-streaming request's body, or None."""
    if len(body) < ENVELOPE.size:
        return None
    flags, length = ENVELOPE.unpack_from(body)
    if flags != 0 or len(body) != ENVELOPE.size + length:
        return None
    return body[ENVELOPE.size :]


def _details(failure: grpc.aio.AioRpcError) -> list[dict]:
    status = rpc_status.from_call(failure)
    if status is None:
        return []
    out = []
    for detail in status.details:
        name = detail.type_url.rsplit("/", 1)[-1]
        entry = {"type": name, "value": base64.b64encode(detail.value).decode().rstrip("=")}
        try:
            kind = message_factory.GetMessageClass(detail.DESCRIPTOR.file.pool.FindMessageTypeByName(name))
            entry["debug"] = json_format.MessageToDict(kind.FromString(detail.value))
        except KeyError:
            pass
        out.append(entry)
    return out


def _metadata(request: web.Request) -> list[tuple[str, str]]:
    return [(h, request.headers[h]) for h in (AUTHORIZATION_HEADER, TENANT_HEADER) if h in request.headers]


def _timeout(request: web.Request) -> float | None:
    raw = request.headers.get("connect-timeout-ms", "")
    return int(raw) / 1000 if raw.isdigit() and 0 < len(raw) <= 10 else None


class JsonFront:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.routes = {}
        for method in METHODS:
            request_type = message_factory.GetMessageClass(method.input_type)
            response_type = message_factory.GetMessageClass(method.output_type)
            path = _path(method)
            open_call = channel.unary_stream if method.server_streaming else channel.unary_unary
            call = open_call(
                path,
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )
            self.routes[path] = (method.server_streaming, request_type, call)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        route = self.routes.get(request.path)
        if route is None:
            return _error(grpc.StatusCode.UNIMPLEMENTED, f"no such RPC: {request.path}")
        streaming, request_type, call = route
        expected = STREAM_TYPE if streaming else UNARY_TYPE
        if request.content_type != expected:
            return web.Response(status=415, text=f"send {expected} (Connect JSON)")
        body = await request.read()
        if streaming:
            body = _unframe(body)
            if body is None:
                return _error(
                    grpc.StatusCode.INVALID_ARGUMENT, "the body is not one uncompressed Connect envelope"
                )
        try:
            message = json_format.Parse(body.decode() or "{}", request_type())
        except (json_format.ParseError, UnicodeDecodeError) as error:
            return _error(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the body is not a {request_type.DESCRIPTOR.name}: {error}"[:300],
            )
        options = {"metadata": _metadata(request), "timeout": _timeout(request)}
        if streaming:
            return await self._stream(request, call(message, **options))
        try:
            response = await call(message, **options)
        except grpc.aio.AioRpcError as failure:
            return _error(failure.code(), failure.details() or "", _details(failure))
        return web.json_response(text=json_format.MessageToJson(response, indent=None))

    async def _stream(self, request: web.Request, responses) -> web.StreamResponse:
        """Each message as it arrives; the outcome, error or not, in the end-of-stream frame."""
        answer = web.StreamResponse(headers={"content-type": STREAM_TYPE})
        await answer.prepare(request)
        end: dict = {}
        try:
            async for response in responses:
                await answer.write(_frame(0, json_format.MessageToJson(response, indent=None).encode()))
        except grpc.aio.AioRpcError as failure:
            end = {"error": _error_body(failure.code(), failure.details() or "", _details(failure))}
        await answer.write(_frame(END_STREAM, json.dumps(end).encode()))
        await answer.write_eof()
        return answer


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(openapi())


def build_app(channel: grpc.aio.Channel) -> web.Application:
    front = JsonFront(channel)
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_get("/openapi.json", openapi_handler)
    app.router.add_post("/{service}/{method}", front.handle)
    return app


async def serve(resources, stop: asyncio.Event) -> None:
    """The JSON/HTTP front as a background loop of the gateway's server."""
    settings = resources.settings
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{resources.grpc_port}")
    runner = web.AppRunner(build_app(channel), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    resources.http_port = runner.addresses[0][1]
    log.info("json/http listening", extra={"fields": {"port": resources.http_port}})
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await channel.close()


# --- OpenAPI, generated from the descriptors ---

_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
}
# Canonical protobuf JSON writes 64-bit integers as strings.
_INT64 = {"type": "string", "format": "int64"}
_WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    "google.protobuf.FieldMask": {"type": "string"},
}


def _field_schema(field: FieldDescriptor, schemas: dict) -> dict:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": _field_schema(value, schemas)}
        schema = _message_ref(field.message_type, schemas)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        schema = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    else:
        schema = _SCALARS.get(field.type, _INT64)
    if field.is_repeated:
        return {"type": "array", "items": schema}
    return schema


def _message_ref(message: Descriptor, schemas: dict) -> dict:
    if message.full_name in _WELL_KNOWN:
        return _WELL_KNOWN[message.full_name]
    if message.full_name not in schemas:
        schemas[message.full_name] = {}  # placeholder first: messages may refer to themselves
        schemas[message.full_name] = {
            "type": "object",
            "properties": {field.json_name: _field_schema(field, schemas) for field in message.fields},
        }
    return {"$ref": f"#/components/schemas/{message.full_name}"}


STREAM_NOTE = (
    "Server streaming (Connect): the request is one envelope (flags byte 0, 4-byte big-endian length, "
    "JSON), the answer a sequence of such envelopes closed by one with flags 0x02 whose JSON holds "
    "`error` (a connect.Error) when the stream failed."
)


def openapi() -> dict:
    schemas: dict = {}
    paths = {}
    error = {
        "description": "A Connect error: code, message and google.rpc details (ErrorInfo carries the reason)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/connect.Error"}}},
    }
    for method in METHODS:
        service = method.containing_service
        media = STREAM_TYPE if method.server_streaming else UNARY_TYPE
        paths[_path(method)] = {
            "post": {
                "operationId": f"{service.name}.{method.name}",
                "tags": [service.name],
                **({"description": STREAM_NOTE} if method.server_streaming else {}),
                "requestBody": {
                    "required": True,
                    "content": {media: {"schema": _message_ref(method.input_type, schemas)}},
                },
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {media: {"schema": _message_ref(method.output_type, schemas)}},
                    },
                    "default": error,
                },
            }
        }
    schemas["connect.Error"] = {
        "type": "object",
        "properties": {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Loyalty gateway (Connect JSON)", "version": "v1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
