"""Every service's command line: `loyalty-<name> serve` and `loyalty-<name> migrate`."""

import argparse
import asyncio

from loyalty_runtime.logs import configure_logging
from loyalty_runtime.server import ServiceDefinition


def run_service_cli(definition: ServiceDefinition) -> None:
    parser = argparse.ArgumentParser(prog=f"loyalty-{definition.name}")
    parser.add_argument("command", choices=["serve", "migrate"])
    command = parser.parse_args().command
    settings = definition.settings()
    configure_logging(definition.name, settings.log_level)
    if command == "migrate":
        if definition.migrations and definition.schema:
            # Alembic and SQLAlchemy are loaded only here: `serve` never needs them.
            from loyalty_runtime.migrations import migrate

            asyncio.run(migrate(settings.database_url, definition.migrations, definition.schema))
        return
    import uvloop

    from loyalty_runtime.metrics import serve_metrics
    from loyalty_runtime.server import ServiceServer, serve_until_signalled
    from loyalty_runtime.telemetry import tracer_provider_from_env

    serve_metrics(settings.metrics_port)
    server = ServiceServer(definition, settings, tracer_provider=tracer_provider_from_env(definition.name))
    uvloop.run(serve_until_signalled(server))
