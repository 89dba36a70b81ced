"""`loyalty-ledger serve` / `loyalty-ledger migrate` (also `python -m loyalty_ledger ...`)."""

from loyalty_ledger.service import DEFINITION
from loyalty_runtime.cli import run_service_cli


def main() -> None:
    run_service_cli(DEFINITION)


if __name__ == "__main__":
    main()
