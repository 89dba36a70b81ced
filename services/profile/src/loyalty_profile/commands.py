"""What each use case is asked to do, as plain values (the servicer builds these from requests).
Customer ids are canonical UUID text; identifiers are as given (the use cases normalise them)."""

from collections.abc import Sequence
from dataclasses import dataclass

from loyalty_profile.domain import (
    AttributeDefinition,
    ConsentAnswer,
    ConsentChannel,
    ConsentPurpose,
    Identifier,
    ProfileFields,
)


@dataclass(frozen=True, slots=True)
class EnrolCustomer:
    identifiers: Sequence[Identifier]
    fields: ProfileFields
    consents: Sequence[ConsentAnswer]


@dataclass(frozen=True, slots=True)
class GetCustomer:
    customer_id: str


@dataclass(frozen=True, slots=True)
class LookupCustomer:
    identifier: Identifier


@dataclass(frozen=True, slots=True)
class UpdateCustomer:
    customer_id: str
    changes: ProfileFields
    paths: Sequence[str]


@dataclass(frozen=True, slots=True)
class SearchCustomers:
    query: str
    limit: int
    # The last customer id of the previous page.
    after: str | None


@dataclass(frozen=True)
class ExportCustomers:
    limit: int
    # The last customer id already exported.
    after: str | None


@dataclass(frozen=True, slots=True)
class AddIdentifier:
    customer_id: str
    identifier: Identifier


@dataclass(frozen=True, slots=True)
class RemoveIdentifier:
    customer_id: str
    identifier: Identifier


@dataclass(frozen=True, slots=True)
class SetConsents:
    customer_id: str
    consents: Sequence[ConsentAnswer]


@dataclass(frozen=True, slots=True)
class CheckConsent:
    customer_id: str
    channel: ConsentChannel
    purpose: ConsentPurpose


@dataclass(frozen=True, slots=True)
class DefineAttribute:
    definition: AttributeDefinition


@dataclass(frozen=True, slots=True)
class ListAttributeDefinitions:
    limit: int
    # The last attribute name of the previous page ("" for the first page).
    after: str


@dataclass(frozen=True, slots=True)
class MergeCustomers:
    survivor_id: str
    merged_id: str


@dataclass(frozen=True, slots=True)
class ExportCustomer:
    customer_id: str


@dataclass(frozen=True, slots=True)
class EraseCustomer:
    customer_id: str
