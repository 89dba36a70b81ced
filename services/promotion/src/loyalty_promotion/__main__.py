from loyalty_promotion.service import DEFINITION, PromotionSettings
from loyalty_runtime.cli import run_service_cli


def main() -> None:
    run_service_cli(DEFINITION, PromotionSettings)


if __name__ == "__main__":
    main()
