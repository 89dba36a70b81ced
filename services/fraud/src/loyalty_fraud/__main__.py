from loyalty_fraud.service import DEFINITION, FraudSettings
from loyalty_runtime.cli import run_service_cli


def main() -> None:
    run_service_cli(DEFINITION, FraudSettings)


if __name__ == "__main__":
    main()
