"""The audit log's hash chain: each record's hash covers its content and its predecessor's hash, so
an edit, insertion or deletion made behind the service's back (in SQL) breaks every later link."""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    sequence: int
    principal: str
    action: str
    resource: str
    fields: tuple[str, ...]
    created_at: datetime


def chain_hash(previous: str, entry: AuditEntry) -> str:
    content = json.dumps(
        [
            entry.sequence,
            entry.principal,
            entry.action,
            entry.resource,
            list(entry.fields),
            entry.created_at.isoformat(timespec="microseconds"),
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(f"{previous}\n{content}".encode()).hexdigest()


@dataclass(frozen=True)
class Verification:
    intact: bool
    checked: int
    first_broken: int


class ChainCheck:
    """Fed the records in sequence order with their stored hashes; a gap in the sequence is a break
    too. Keeps only the last hash, so a long log is checked as it streams by."""

    def __init__(self) -> None:
        self.previous, self.checked, self.first_broken = GENESIS, 0, 0

    def add(self, entry: AuditEntry, stored: str) -> bool:
        """False from the first broken record on."""
        if self.first_broken:
            return False
        self.checked += 1
        if entry.sequence != self.checked or chain_hash(self.previous, entry) != stored:
            self.first_broken = entry.sequence
            return False
        self.previous = stored
        return True

    def result(self) -> Verification:
        return Verification(not self.first_broken, self.checked, self.first_broken)


def verify(records: Iterable[tuple[AuditEntry, str]]) -> Verification:
    check = ChainCheck()
    for entry, stored in records:
        if not check.add(entry, stored):
            break
    return check.result()
