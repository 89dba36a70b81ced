"""Texts for the till: localized messages and "spend X more" / "add N more items" hints."""

from loyalty.promotion.v1 import promotion_pb2
from loyalty_promotion.engine.facts import Facts
from loyalty_promotion.engine.money import format_amount


def localized(text: promotion_pb2.LocalizedText, locale: str) -> str:
    if locale:
        for tag in (locale, locale.split("-")[0]):
            if tag in text.translations:
                return text.translations[tag]
    return text.text


def qualify_hint(promotion, facts: Facts, amount_short: int, units_short: int) -> str:
    """The promotion's hint_message with {amount} / {units} filled in, else a default sentence."""
    amount = format_amount(amount_short, facts.basket.currency)
    template = localized(promotion.hint_message, facts.customer.locale)
    name = promotion.display_name or "this offer"
    if template:
        return template.replace("{amount}", amount).replace("{units}", str(units_short))
    if amount_short:
        return f"Spend {amount} more for {name}"
    item = "item" if units_short == 1 else "items"
    return f"Add {units_short} more {item} for {name}"
