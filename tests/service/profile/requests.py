"""Requests of every ProfileService RPC, built from the descriptors (tests/garbage.py fills them)."""

from google.protobuf.message import Message

from loyalty.profile.v1 import profile_service_pb2 as api

SERVICE = api.DESCRIPTOR.services_by_name["ProfileService"]
REQUESTS: dict[str, type[Message]] = {
    method.name: getattr(api, method.input_type.name) for method in SERVICE.methods
}
MUTATING = [
    name for name, request in REQUESTS.items() if "idempotency_key" in request.DESCRIPTOR.fields_by_name
]
# The attribute names the profile fuzz tests define, as map keys.
MAP_KEYS = ["diet", "home_store", "size"]
