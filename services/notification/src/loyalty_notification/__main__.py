from loyalty_notification.service import DEFINITION, NotificationSettings
from loyalty_runtime.cli import run_service_cli


def main() -> None:
    run_service_cli(DEFINITION, NotificationSettings)


if __name__ == "__main__":
    main()
