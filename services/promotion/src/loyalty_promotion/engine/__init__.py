"""The promotion engine: pure (no I/O, no awaits, no clock) and compiled.

Use from the service:

    catalog = compile_catalog(campaigns, settings, earning_rules=rules, tz=settings.time_zone)
    basket = decode_basket(request.basket)            # raises BasketInvalid naming the line
    customer = decode_customer(request.customer)
    codes = [PresentedCode(code, campaign_id=..., rejection=...) for each presented code]
    result = evaluate(catalog, basket, customer, codes, now)
    response.result.CopyFrom(encode_evaluation(result))

- `compile_catalog(campaigns, settings, *, earning_rules=(), tz="UTC") -> Catalog`: compiles the
  tenant's live campaigns once (condition trees to closures, CEL precompiled, an index by
  SKU / category / brand / segment / channel / store). A campaign that fails `validate_campaign`
  is left out and listed in `Catalog.rejected` (it can never break the tenant's evaluations).
  Hold the Catalog in memory; rebuild it when any campaign or setting changes.
- `validate_campaign(campaign_input) -> list[Violation]`: what makes a campaign unusable, each
  with a field path, an ErrorReason (320-349) and a description. Empty = fine. Call it on save.
- `validate_basket(basket_pb) -> list[Violation]` and `decode_basket(basket_pb) -> Basket`
  (raises `BasketInvalid(violations)`): negative quantity or price, unknown or mixed currency,
  more than MAX_LINES lines, duplicate line ids, each naming `basket.lines[i].<field>`.
- `evaluate(catalog, basket, customer, codes, now) -> Evaluation`: per-line discounts with their
  promotion, free items, points per source allocated to lines, totals, applied promotions, and
  for each code and each candidate that did not apply a reason and a till hint. Deterministic;
  writes nothing. `now` must be timezone-aware.
- `conflicting_campaigns(catalog, campaign_id, baskets, customer, now) -> list[str]`: live campaigns
  that apply to one of the baskets together with campaign_id and compete with it (exclusive,
  same exclusivity group, or discounting the same lines) — for SimulateCampaign.
- `encode_evaluation(evaluation) -> EvaluationResult` (evaluation.proto), in `encoding.py`.
"""

from loyalty_promotion.engine.catalog import CampaignInput, Catalog, compile_catalog
from loyalty_promotion.engine.encoding import decode_basket, decode_customer, encode_evaluation
from loyalty_promotion.engine.evaluate import OfferCandidate, conflicting_campaigns, customer_offers, evaluate
from loyalty_promotion.engine.model import (
    MAX_LINES,
    Applied,
    Basket,
    BasketInvalid,
    Candidate,
    CodeOutcome,
    CustomerContext,
    Evaluation,
    FreeItem,
    Line,
    LineDiscount,
    LineOutcome,
    PointsEntry,
    PresentedCode,
    Violation,
)
from loyalty_promotion.engine.validation import validate_basket, validate_campaign, validate_earning_rule

__all__ = [
    "MAX_LINES",
    "Applied",
    "Basket",
    "BasketInvalid",
    "CampaignInput",
    "Candidate",
    "Catalog",
    "CodeOutcome",
    "CustomerContext",
    "Evaluation",
    "FreeItem",
    "Line",
    "LineDiscount",
    "LineOutcome",
    "OfferCandidate",
    "PointsEntry",
    "PresentedCode",
    "Violation",
    "compile_catalog",
    "conflicting_campaigns",
    "customer_offers",
    "decode_basket",
    "decode_customer",
    "encode_evaluation",
    "evaluate",
    "validate_basket",
    "validate_campaign",
    "validate_earning_rule",
]
