"""docs/events.md lists every event exactly as the protos and the service definitions have it: each
message with an `event_type` option once, with its payload, its producer's stream, and the services
that subscribe to it (directly or through their customer-data hooks)."""

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import loyalty
from loyalty.common.v1 import options_pb2
from loyalty_runtime.catalogue import SERVICES
from loyalty_runtime.uow import event_type_of
from loyalty_runtime.wiring import subscriptions_of

CATALOGUE = Path(__file__).resolve().parents[3] / "docs" / "events.md"
PACKAGE = re.compile(r"loyalty\.(?P<domain>[a-z_]+)\.v\d+")


def event_messages() -> dict[str, str]:
    """event type -> full name of its message, from every generated module under `loyalty`."""
    found: dict[str, str] = {}
    for module in pkgutil.walk_packages(loyalty.__path__, "loyalty."):
        if not module.name.endswith("_pb2"):
            continue
        for message in importlib.import_module(module.name).DESCRIPTOR.message_types_by_name.values():
            if message.GetOptions().HasExtension(options_pb2.event_type):
                event_type = event_type_of(message)
                assert event_type not in found, f"{event_type} is the type of two messages"
                found[event_type] = message.full_name
    return found


def catalogue_rows() -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    lines = CATALOGUE.read_text().splitlines()
    header = lines.index("| Event | Payload | Stream | Producer | Consumers | What it means |")
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        event, payload, stream, producer, consumers, meaning = (
            cell.strip() for cell in line.strip("|").split("|")
        )
        assert event.strip("`") not in rows, f"{event} is listed twice"
        rows[event.strip("`")] = {
            "payload": payload.strip("`"),
            "stream": stream.strip("`"),
            "producer": producer,
            "consumers": "" if consumers == "—" else consumers,
            "meaning": meaning,
        }
    return rows


@pytest.fixture(scope="module")
def definitions():
    """Every service's definition (each service must import for the catalogue to be checked)."""
    return {entry.name: importlib.import_module(f"{entry.package}.service").DEFINITION for entry in SERVICES}


def test_the_catalogue_lists_every_event_of_the_protos_with_its_payload_and_stream():
    rows = catalogue_rows()
    events = event_messages()
    assert set(rows) == set(events)
    for event_type, message in events.items():
        domain = PACKAGE.match(message)["domain"]
        row = rows[event_type]
        assert (row["payload"], row["stream"], row["producer"]) == (message, f"{domain}.events", domain), (
            event_type
        )
        assert row["meaning"], f"{event_type} says nothing about what it means"


def test_each_event_is_published_on_its_producers_stream(definitions):
    for event_type, row in catalogue_rows().items():
        assert definitions[row["producer"]].events == row["stream"], event_type


def test_the_consumers_are_the_services_that_subscribe(definitions):
    consumers: dict[str, set[str]] = {}
    rows = catalogue_rows()
    for name, definition in definitions.items():
        for subscription in subscriptions_of(definition):
            event_type = event_type_of(subscription.event.DESCRIPTOR)
            assert event_type in rows, f"{name} subscribes to {event_type}, which no catalogue row lists"
            assert subscription.stream == rows[event_type]["stream"], f"{name} reads {event_type} elsewhere"
            consumers.setdefault(event_type, set()).add(name)
    for event_type, row in rows.items():
        listed = {c.strip() for c in row["consumers"].split(",") if c.strip()}
        assert listed == consumers.get(event_type, set()), event_type
