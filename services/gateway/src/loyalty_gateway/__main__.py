from loyalty_gateway.service import DEFINITION, GatewaySettings
from loyalty_runtime.cli import run_service_cli


def main() -> None:
    run_service_cli(DEFINITION, GatewaySettings)


if __name__ == "__main__":
    main()
