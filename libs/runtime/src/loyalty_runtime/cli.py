"""Every service's command line: `loyalty-<name> serve` and `loyalty-<name> migrate`."""

import argparse
import asyncio
from collections.abc import Callable

import uvloop

from loyalty_runtime.logs import configure_logging
from loyalty_runtime.metrics import serve_metrics
from loyalty_runtime.migrations import migrate
from loyalty_runtime.server import ServiceDefinition, ServiceServer, serve_until_signalled
from loyalty_runtime.settings import ServiceSettings
from loyalty_runtime.telemetry import tracer_provider_from_env


def run_service_cli(definition: ServiceDefinition, settings_factory: Callable[[], ServiceSettings]) -> None:
    parser = argparse.ArgumentParser(prog=f"loyalty-{definition.name}")
    parser.add_argument("command", choices=["serve", "migrate"])
    command = parser.parse_args().command
    settings = settings_factory()
    configure_logging(definition.name, settings.log_level)
    if command == "migrate":
        if definition.migrations and definition.schema:
            asyncio.run(migrate(settings.database_url, definition.migrations, definition.schema))
        return
    serve_metrics(settings.metrics_port)
    server = ServiceServer(definition, settings, tracer_provider=tracer_provider_from_env(definition.name))
    uvloop.run(serve_until_signalled(server))
