"""A gRPC call made by hand over HTTP/2 (h2), for what no gRPC client would send: header values with
control characters, bytes that are not UTF-8, keys in upper case. Blocking; run it in a thread."""

import socket
import struct

import h2.config
import h2.connection
import h2.events


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def raw_call(port: int, path: str, headers: list[tuple[bytes, bytes]], message: bytes) -> str | None:
    """The grpc-status the server answered ("0", "3", ...), or None if it reset or closed instead."""
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    connection = h2.connection.H2Connection(config=config)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        connection.initiate_connection()
        request = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"localhost"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *headers,
        ]
        connection.send_headers(1, request)
        connection.send_data(1, grpc_frame(message), end_stream=True)
        sock.sendall(connection.data_to_send())
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                return None
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    status = dict(event.headers).get(b"grpc-status")
                    if status is not None:
                        return status.decode()
                if isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    return None
            sock.sendall(connection.data_to_send())
