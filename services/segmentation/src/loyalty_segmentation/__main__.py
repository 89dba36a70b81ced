from loyalty_runtime.cli import run_service_cli
from loyalty_segmentation.service import DEFINITION


def main() -> None:
    run_service_cli(DEFINITION)


if __name__ == "__main__":
    main()
