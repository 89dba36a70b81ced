"""The ledger's SQL, as PostgreSQL text on the unit of work's asyncpg connection.

Every statement names the caller's tenant (`uow.tenant`) in its WHERE clause, including those that
reach rows through an account already locked under the tenant; another tenant's row is simply not
found. The one exception says so: the scheduler's list of tenants with programmes.

A state change is: lock the customer accounts it touches (`SELECT ... FOR UPDATE`, in account-id
order, so two transfers never deadlock), read what the rule at hand needs (holds only when the
account holds points, lots only for a debit and then only the earliest-expiring ones that cover it),
and write what the domain staged (`domain/journal.py`) in one statement (`write`). Reads after the
lock see everything committed before it (READ COMMITTED takes a snapshot per statement), so they are
current. Statements are constants (or, for `write`, one text per shape of change), so asyncpg
prepares each once per connection.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from functools import cache

import asyncpg

from loyalty_ledger.domain import rules
from loyalty_ledger.domain.journal import Journal
from loyalty_ledger.domain.model import (
    Account,
    AccountKind,
    AssetKind,
    Bucket,
    Checkout,
    CheckoutLine,
    Entry,
    EntryType,
    ExpiryPolicy,
    ExpiryRule,
    Hold,
    HoldState,
    LineReturn,
    Lot,
    Posting,
    Program,
    ProgramRules,
    Tier,
)
from loyalty_runtime.errors import AlreadyExists, Reason
from loyalty_runtime.uow import UnitOfWork

# The ledger's own PostgreSQL schema (its SQL names it; models.py and the migrations use it).
SCHEMA = "ledger"

# Lots read for a debit at first: a burn rarely spans more. Should they not cover it, all are read.
FIRST_LOTS = 16
# A GetAccount shows the next expiry dates, at most this many.
EXPIRING_SHOWN = 12


def _numbered(template: str) -> tuple[str, tuple[str, ...]]:
    """`{name}` placeholders -> `$1, $2, ...` (each name once), and the names in order."""
    names = tuple(dict.fromkeys(re.findall(r"\{(\w+)\}", template)))
    return template.format(**{name: f"${i}" for i, name in enumerate(names, 1)}), names


_ACCOUNT = "a.account_id, a.kind, a.posted, a.pending, a.held, a.program_id, a.customer_id, a.tier_code, a.created_at"
_HOLD = (
    "h.hold_id, h.account_id, h.amount, h.expires_at, h.state, h.captured_amount, h.seq, h.reason, "
    "h.source_ref, h.capture_entry_id, h.created_at"
)
_LOT = "l.lot_id, l.remaining, l.expires_at, l.seq, l.pending, l.available_at"
_ENTRY = """e.entry_id, e.program_id, e.entry_type, e.asset_code, e.amount, e.created_at, e.unrecovered_amount,
    e.reason, e.source_ref, e.idempotency_key, e.reversed_entry_id, e.hold_id, e.subject_account_id,
    e.counter_account_id, e.lot_id, e.restore_expires_at, e.qualifying_account_id, e.qualifying_delta,
    p.accounts, p.amounts, p.buckets, p.balances"""
_POSTINGS_OF_ENTRY = """CROSS JOIN LATERAL (
    SELECT array_agg(p.account_id ORDER BY p.id) AS accounts, array_agg(p.amount ORDER BY p.id) AS amounts,
           array_agg(p.bucket ORDER BY p.id) AS buckets, array_agg(p.balance_after ORDER BY p.id) AS balances
    FROM ledger.postings p WHERE p.tenant_id = $1 AND p.entry_id = e.entry_id) p"""

PROGRAM = """
SELECT g.program_id, g.display_name, g.asset_kind, g.asset_code, g.allow_overdraft, g.expiry_rule,
       g.expiry_months, g.expiry_warning_days, g.default_hold_ttl_seconds, g.tier_window_days, g.tiers, g.created_at, s.kinds, s.ids
FROM ledger.programs g
CROSS JOIN LATERAL (
    SELECT array_agg(a.kind) AS kinds, array_agg(a.account_id) AS ids FROM ledger.accounts a
    WHERE a.tenant_id = $1 AND a.program_id = g.program_id AND a.customer_id IS NULL) s
WHERE g.tenant_id = $1 AND g.program_id = $2"""

CREATE_PROGRAM = """
WITH program AS (
    INSERT INTO ledger.programs (program_id, tenant_id, display_name, asset_kind, asset_code, allow_overdraft,
                                 expiry_rule, expiry_months, default_hold_ttl_seconds, tier_window_days, tiers,
                                 created_at, expiry_warning_days)
    VALUES ($2, $1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $15)
)
INSERT INTO ledger.accounts (account_id, tenant_id, program_id, customer_id, kind, posted, pending, held,
                             tier_code, created_at)
SELECT s.account_id, $1, $2, NULL, s.kind, 0, 0, 0, '', $12
FROM unnest($13::varchar[], $14::varchar[]) AS s(account_id, kind)"""

OPEN_ACCOUNT = f"""
INSERT INTO ledger.accounts AS a (account_id, tenant_id, program_id, customer_id, kind, posted, pending, held,
                                  tier_code, created_at)
VALUES ($2, $1, $3, $4, 'CUSTOMER', 0, 0, 0, '', $5)
ON CONFLICT (tenant_id, program_id, customer_id) WHERE customer_id IS NOT NULL DO NOTHING
RETURNING {_ACCOUNT}"""

ACCOUNT = f"SELECT {_ACCOUNT} FROM ledger.accounts a WHERE a.tenant_id = $1 AND a.account_id = $2"

ACCOUNT_OF_CUSTOMER = f"""
SELECT {_ACCOUNT} FROM ledger.accounts a WHERE a.tenant_id = $1 AND a.program_id = $2 AND a.customer_id = $3"""

# Row locks in account-id order, so two transfers between the same accounts never deadlock.
LOCK_ACCOUNTS = f"""
SELECT {_ACCOUNT} FROM ledger.accounts a
WHERE a.tenant_id = $1 AND a.account_id = ANY($2::varchar[])
ORDER BY a.account_id
FOR UPDATE"""

# A hold never moves between accounts (a merge voids holds, it does not move them), so finding its
# account needs no lock of its own.
LOCK_ACCOUNT_OF_HOLD = f"""
SELECT {_ACCOUNT} FROM ledger.accounts a
WHERE a.tenant_id = $1
  AND a.account_id = (SELECT h.account_id FROM ledger.holds h WHERE h.tenant_id = $1 AND h.hold_id = $2)
FOR UPDATE"""

# A checkout's account never changes either.
LOCK_ACCOUNT_OF_CHECKOUT = f"""
SELECT {_ACCOUNT} FROM ledger.accounts a
WHERE a.tenant_id = $1
  AND a.account_id = (SELECT c.account_id FROM ledger.checkouts c WHERE c.tenant_id = $1 AND c.checkout_id = $2)
FOR UPDATE"""

# Read under the account's lock (holds change only under it): its active holds, and the hold the
# call is about to settle, whatever its state.
ACCOUNT_HOLDS = f"""
SELECT {_HOLD} FROM ledger.holds h
WHERE h.tenant_id = $1 AND h.account_id = $2 AND (h.state = 'ACTIVE' OR h.hold_id = $3::varchar)"""

# Earliest expiry first, never-expiring last, then creation order: `rules.consume_lots`'s order, so
# a LIMIT gives a prefix of what a debit consumes (the `lots_spendable` index serves it in order).
SPENDABLE_LOTS = f"""
SELECT {_LOT} FROM ledger.lots l
WHERE l.tenant_id = $1 AND l.account_id = $2 AND l.remaining > 0 AND NOT l.pending
ORDER BY l.expires_at, l.seq
LIMIT $3"""

LOT = f"""
SELECT {_LOT} FROM ledger.lots l
WHERE l.tenant_id = $1 AND l.account_id = $2 AND l.lot_id = $3 AND l.remaining > 0"""

ALL_LOTS = (
    f"SELECT {_LOT} FROM ledger.lots l WHERE l.tenant_id = $1 AND l.account_id = $2 AND l.remaining > 0"
)

MATURING_LOTS = f"""
SELECT {_LOT} FROM ledger.lots l
WHERE l.tenant_id = $1 AND l.account_id = $2 AND l.remaining > 0 AND l.pending AND l.available_at <= $3"""

WARN_CHUNK = 5_000

DUE_LOTS = f"""
SELECT {_LOT} FROM ledger.lots l
WHERE l.tenant_id = $1 AND l.account_id = $2 AND l.remaining > 0 AND NOT l.pending AND l.expires_at <= $3"""

# Everything a unit of work staged, in one statement, made of the parts it needs (an earn: the entry,
# its postings, its lot, the account's balance and tier); a part with nothing to do would still cost
# PostgreSQL its planning and its empty scan on every call. A part of one or two rows (an earn's
# entry, postings, lot and balance) gets them as scalar parameters, more as arrays (`unnest`): with
# arrays the planner cannot know the row counts of a prepared statement and plans each call anew
# (about 0.5 ms of PostgreSQL's CPU for an earn), with scalars it keeps one plan per connection.
# Each shape's text is prepared once per connection.
# Data-modifying CTEs run once each, referenced or not, on one snapshot, so each row is changed by
# one part only (the journal merges the changes per lot, hold and account). Foreign keys are checked
# at the end of the statement, when the entry rows exist. Tiers: the qualifying points of each
# tracked account's window before this statement (its own entries are not visible to it) plus what
# the unit adds, against the domain's tier ladder (`rules.tier_ladder`: the first threshold met wins).
WRITE_PARTS: dict[str, tuple[str, str]] = {
    "entries": (
        "e(entry_id varchar, entry_type varchar, amount bigint, unrecovered bigint, reason varchar, source_ref varchar, "
        "idempotency_key varchar, reversed_entry_id varchar, hold_id varchar, subject varchar, counter varchar, "
        "lot_id varchar, restore timestamptz, qualifying_account varchar, qualifying_delta bigint)",
        """INSERT INTO ledger.journal_entries (
        entry_id, tenant_id, program_id, entry_type, asset_code, amount, unrecovered_amount, reason, source_ref,
        idempotency_key, reversed_entry_id, hold_id, subject_account_id, counter_account_id, lot_id,
        restore_expires_at, qualifying_account_id, qualifying_delta, created_at)
    SELECT e.entry_id, {tenant}, {program}, e.entry_type, {asset_code}, e.amount, e.unrecovered, e.reason,
           e.source_ref, e.idempotency_key, e.reversed_entry_id, e.hold_id, e.subject, e.counter, e.lot_id,
           e.restore, e.qualifying_account, e.qualifying_delta, {now}
    FROM {rows} ORDER BY e.n""",
    ),
    "postings": (
        "p(entry_id varchar, account_id varchar, amount bigint, bucket varchar, balance_after bigint)",
        """INSERT INTO ledger.postings (entry_id, tenant_id, account_id, amount, bucket, balance_after)
    SELECT p.entry_id, {tenant}, p.account_id, p.amount, p.bucket, p.balance_after FROM {rows} ORDER BY p.n""",
    ),
    "new_lots": (
        "l(lot_id varchar, account_id varchar, entry_id varchar, amount bigint, expires_at timestamptz, "
        "pending boolean, available_at timestamptz)",
        """INSERT INTO ledger.lots (lot_id, tenant_id, account_id, entry_id, amount, remaining, expires_at, pending,
                             available_at)
    SELECT l.lot_id, {tenant}, l.account_id, l.entry_id, l.amount, l.amount, l.expires_at, l.pending,
           l.available_at
    FROM {rows} ORDER BY l.n""",
    ),
    "consumed_lots": (
        "u(lot_id varchar, delta bigint, mature boolean)",
        """UPDATE ledger.lots AS l SET remaining = l.remaining + u.delta, pending = l.pending AND NOT u.mature
    FROM {rows} WHERE l.tenant_id = {tenant} AND l.lot_id = u.lot_id""",
    ),
    "new_holds": (
        "h(hold_id varchar, account_id varchar, amount bigint, expires_at timestamptz, reason varchar, "
        "source_ref varchar)",
        """INSERT INTO ledger.holds (hold_id, tenant_id, account_id, amount, captured_amount, state, expires_at,
                              reason, source_ref, created_at)
    SELECT h.hold_id, {tenant}, h.account_id, h.amount, 0, 'ACTIVE', h.expires_at, h.reason, h.source_ref, {now}
    FROM {rows}""",
    ),
    "settled_holds": (
        "c(hold_id varchar, state varchar, captured bigint, capture_entry_id varchar)",
        """UPDATE ledger.holds AS h SET state = c.state, captured_amount = c.captured, capture_entry_id = c.capture_entry_id
    FROM {rows} WHERE h.tenant_id = {tenant} AND h.hold_id = c.hold_id""",
    ),
    "tiers": (
        "q(account_id varchar, delta bigint)",
        """SELECT w.account_id, w.points, coalesce(
        (SELECT t.code FROM unnest({ladder_codes}::varchar[], {ladder_thresholds}::bigint[])
                WITH ORDINALITY AS t(code, threshold, n)
         WHERE w.points >= t.threshold ORDER BY t.n LIMIT 1), '') AS tier_code
    FROM (SELECT q.account_id, q.delta + coalesce(
              (SELECT sum(j.qualifying_delta) FROM ledger.journal_entries j
               WHERE j.tenant_id = {tenant} AND j.qualifying_account_id = q.account_id AND j.qualifying_delta <> 0
                 AND j.created_at >= {window_start}), 0)::bigint AS points
          FROM {rows}) AS w""",
    ),
    "balances": (
        "d(account_id varchar, posted bigint, pending bigint, held bigint)",
        """UPDATE ledger.accounts AS a
    SET posted = a.posted + d.posted, pending = a.pending + d.pending, held = a.held + d.held,
        tier_code = {tier_code}
    FROM {rows} WHERE a.tenant_id = {tenant} AND a.account_id = d.account_id""",
    ),
}
# At most this many rows of a part travel as scalars (one plan); more as arrays.
SCALAR_ROWS = 2


def _columns(part: str) -> list[list[str]]:
    """[name, SQL type] of each column of a part's rows."""
    return [c.strip().split(" ") for c in WRITE_PARTS[part][0].partition("(")[2].rstrip(")").split(",")]


COLUMNS = {part: [name for name, _ in _columns(part)] for part in WRITE_PARTS}


def _rows_source(part: str, count: int) -> str:
    """`FROM` source of a part's rows: VALUES of scalar parameters, or unnest of arrays. Both number
    the rows (`n`) so inserts keep the journal's order."""
    alias = WRITE_PARTS[part][0].partition("(")[0]
    columns = _columns(part)
    names = COLUMNS[part]
    if count <= SCALAR_ROWS:
        values = ", ".join(
            "(" + ", ".join(f"{{{part}_{row}_{name}}}::{kind}" for name, kind in columns) + f", {row})"
            for row in range(count)
        )
        return f"(VALUES {values}) AS {alias}({', '.join(names)}, n)"
    arrays = ", ".join(f"{{{part}_{name}}}::{kind}[]" for name, kind in columns)
    return f"unnest({arrays}) WITH ORDINALITY AS {alias}({', '.join(names)}, n)"


@cache
def write_statement(shape: tuple[tuple[str, int], ...]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The statement writing `shape` ((part, rows) in WRITE_PARTS' order, rows above SCALAR_ROWS
    counted as SCALAR_ROWS + 1), and the layout of its parameters: ("value", name) for one value,
    ("rows", part) for the block of a part's rows (their placeholders are consecutive)."""
    parts = dict(shape)
    tracked = "(SELECT t.tier_code FROM tiers t WHERE t.account_id = d.account_id)"
    ctes = [
        f"{name} AS (\n    "
        + WRITE_PARTS[name][1]
        .replace("{rows}", _rows_source(name, parts[name]))
        .replace("{tier_code}", f"coalesce({tracked}, a.tier_code)" if "tiers" in parts else "a.tier_code")
        + ")"
        for name in WRITE_PARTS
        if name in parts
    ]
    result = (
        "SELECT account_id, tier_code, points FROM tiers" if "tiers" in parts else "SELECT NULL AS account_id"
    )
    statement, names = _numbered("WITH " + ",\n".join(ctes) + "\n" + result)
    layout: list[tuple[str, str]] = []
    for name in names:
        part = next((p for p in parts if name.startswith(f"{p}_")), None)
        if part is None:
            layout.append(("value", name))
        elif layout[-1:] != [("rows", part)]:
            layout.append(("rows", part))
    return statement, tuple(layout)


ENTRY = f"""
SELECT {_ENTRY} FROM ledger.journal_entries e {_POSTINGS_OF_ENTRY}
WHERE e.tenant_id = $1 AND e.entry_id = $2"""

ENTRY_BY_KEY = f"""
SELECT {_ENTRY} FROM ledger.journal_entries e {_POSTINGS_OF_ENTRY}
WHERE e.tenant_id = $1 AND e.idempotency_key = $2
ORDER BY e.created_at LIMIT 1"""

# What the entries have had reversed so far: read under the lock of the accounts they touch, which
# every reversal of them takes too (`journal_entries_reversals` serves it).
REVERSED = """
SELECT reversed_entry_id, sum(amount)::bigint AS total FROM ledger.journal_entries
WHERE tenant_id = $1 AND reversed_entry_id = ANY($2::varchar[])
GROUP BY reversed_entry_id"""

# GetAccount in one statement: the row, a system account's balance (the sum of its postings), the
# next expiry dates, and whether something is due (a timed-out hold, pending points whose time has
# come), which the stored balance does not show yet.
_READ_ACCOUNT = f"""
SELECT {_ACCOUNT},
       CASE WHEN a.customer_id IS NULL THEN
           (SELECT coalesce(sum(p.amount), 0)::bigint FROM ledger.postings p
            WHERE p.tenant_id = $1 AND p.account_id = a.account_id) END AS system_posted,
       (a.held > 0 AND EXISTS (
            SELECT 1 FROM ledger.holds h
            WHERE h.tenant_id = $1 AND h.account_id = a.account_id AND h.state = 'ACTIVE' AND h.expires_at <= $2))
       OR (a.pending > 0 AND EXISTS (
            SELECT 1 FROM ledger.lots l
            WHERE l.tenant_id = $1 AND l.account_id = a.account_id AND l.remaining > 0 AND l.pending
              AND l.available_at <= $2)) AS unsettled,
       x.expiries, x.amounts
FROM ledger.accounts a
CROSS JOIN LATERAL (
    SELECT array_agg(s.expires_at ORDER BY s.expires_at) AS expiries,
           array_agg(s.total ORDER BY s.expires_at) AS amounts
    FROM (SELECT l.expires_at, sum(l.remaining)::bigint AS total FROM ledger.lots l
          WHERE l.tenant_id = $1 AND l.account_id = a.account_id AND l.remaining > 0 AND NOT l.pending
            AND l.expires_at IS NOT NULL
          GROUP BY l.expires_at ORDER BY l.expires_at LIMIT {EXPIRING_SHOWN}) s) x
WHERE a.tenant_id = $1"""
READ_ACCOUNT = f"{_READ_ACCOUNT} AND a.account_id = $3"
READ_ACCOUNT_OF_CUSTOMER = f"{_READ_ACCOUNT} AND a.program_id = $3 AND a.customer_id = $4"

HOLD = f"SELECT {_HOLD} FROM ledger.holds h WHERE h.tenant_id = $1 AND h.hold_id = $2"

ACCOUNT_EXISTS = "SELECT true FROM ledger.accounts WHERE tenant_id = $1 AND account_id = $2"

# An entry's postings on one account are consecutive (the account's lock orders its entries), so the
# page boundary is an entry's last posting id.
STATEMENT_LINES = """
SELECT p.entry_id, sum(p.amount)::bigint AS amount, max(p.balance_after) AS balance_after, max(p.id) AS last_id,
       e.entry_type, e.reason, e.source_ref, e.created_at
FROM ledger.postings p JOIN ledger.journal_entries e ON e.entry_id = p.entry_id AND e.tenant_id = $1
WHERE p.tenant_id = $1 AND p.account_id = $2
GROUP BY p.entry_id, e.entry_type, e.reason, e.source_ref, e.created_at
HAVING $3::bigint IS NULL OR max(p.id) < $3::bigint
ORDER BY last_id DESC
LIMIT $4"""

DUE_ACCOUNTS = """
SELECT account_id FROM (
    SELECT account_id FROM ledger.lots
    WHERE tenant_id = $1 AND remaining > 0 AND NOT pending AND expires_at <= $2
    UNION
    SELECT account_id FROM ledger.lots WHERE tenant_id = $1 AND remaining > 0 AND pending AND available_at <= $2
    UNION
    SELECT account_id FROM ledger.holds WHERE tenant_id = $1 AND state = 'ACTIVE' AND expires_at <= $2
) due
WHERE $3::varchar IS NULL
   OR account_id IN (SELECT account_id FROM ledger.accounts WHERE tenant_id = $1 AND program_id = $3)
ORDER BY account_id"""

# Marks up to a chunk of lots newly inside their programme's warning window as warned, and sums them
# per account (ordered by account, so a chunk splits few accounts' lots across two events).
WARN_LOTS = f"""
WITH due AS (
    SELECT l.lot_id FROM ledger.lots l
    JOIN ledger.accounts a ON a.account_id = l.account_id
    JOIN ledger.programs g ON g.program_id = a.program_id
    WHERE l.tenant_id = $1 AND l.remaining > 0 AND NOT l.pending AND l.warned_at IS NULL
      AND g.expiry_warning_days > 0 AND l.expires_at > $2
      AND l.expires_at <= $2 + make_interval(days => g.expiry_warning_days)
    ORDER BY l.account_id LIMIT {WARN_CHUNK} FOR UPDATE OF l SKIP LOCKED
), warned AS (
    UPDATE ledger.lots l SET warned_at = $2 FROM due WHERE l.lot_id = due.lot_id
    RETURNING l.account_id, l.remaining, l.expires_at
)
SELECT w.account_id, a.customer_id, a.program_id, sum(w.remaining)::bigint AS amount,
       min(w.expires_at) AS expires_at, count(*) AS lots
FROM warned w JOIN ledger.accounts a ON a.account_id = w.account_id
GROUP BY w.account_id, a.customer_id, a.program_id ORDER BY w.account_id"""

PROGRAM_IDS = "SELECT program_id FROM ledger.programs WHERE tenant_id = $1 ORDER BY program_id"

QUALIFYING_IN_PROGRAM = """
SELECT a.account_id, a.customer_id, a.tier_code, coalesce(q.points, 0) AS points
FROM ledger.accounts a
LEFT JOIN (SELECT qualifying_account_id, sum(qualifying_delta)::bigint AS points FROM ledger.journal_entries
           WHERE tenant_id = $1 AND program_id = $2 AND qualifying_delta <> 0 AND created_at >= $3
           GROUP BY qualifying_account_id) q ON q.qualifying_account_id = a.account_id
WHERE a.tenant_id = $1 AND a.program_id = $2 AND a.customer_id IS NOT NULL
ORDER BY a.account_id"""

# Guarded by the tier read: an earn that moved the tier meanwhile wins.
SET_TIERS = """
UPDATE ledger.accounts AS a SET tier_code = c.new
FROM unnest($2::varchar[], $3::varchar[], $4::varchar[]) AS c(account_id, old, new)
WHERE a.tenant_id = $1 AND a.account_id = c.account_id AND a.tier_code = c.old
RETURNING a.account_id"""

# Across tenants, on purpose: the scheduler runs each tenant's expiry and tiers in that tenant's units.
TENANTS = "SELECT DISTINCT tenant_id FROM ledger.programs ORDER BY tenant_id"

MAKE_AVAILABLE_NOW = """
WITH due AS (
    UPDATE ledger.lots SET available_at = $3
    WHERE tenant_id = $1 AND entry_id = $2 AND pending AND remaining > 0 RETURNING 1)
SELECT count(*) FROM due"""

CHECKOUT_EXISTS = "SELECT true FROM ledger.checkouts WHERE tenant_id = $1 AND checkout_id = $2"

INSERT_CHECKOUT = """
WITH checkout AS (
    INSERT INTO ledger.checkouts (tenant_id, checkout_id, account_id, program_id, earn_entry_id, burn_entry_id,
                                  hold_id, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
)
INSERT INTO ledger.checkout_lines (tenant_id, checkout_id, line_id, position, quantity, earn_points, burn_points)
SELECT $1, $2, l.line_id, l.n, l.quantity, l.earn_points, l.burn_points
FROM unnest($9::varchar[], $10::bigint[], $11::bigint[], $12::bigint[])
     WITH ORDINALITY AS l(line_id, quantity, earn_points, burn_points, n)"""

# Read under the checkout account's lock, which every return of the checkout takes.
CHECKOUT = """
SELECT c.account_id, c.program_id, c.earn_entry_id, c.burn_entry_id, l.ids, l.quantities, l.earns, l.burns,
       l.returned
FROM ledger.checkouts c
CROSS JOIN LATERAL (
    SELECT array_agg(l.line_id ORDER BY l.position) AS ids, array_agg(l.quantity ORDER BY l.position) AS quantities,
           array_agg(l.earn_points ORDER BY l.position) AS earns, array_agg(l.burn_points ORDER BY l.position) AS burns,
           array_agg(coalesce(r.returned, 0) ORDER BY l.position) AS returned
    FROM ledger.checkout_lines l
    LEFT JOIN (SELECT line_id, sum(quantity)::bigint AS returned FROM ledger.checkout_returns
               WHERE tenant_id = $1 AND checkout_id = $2 GROUP BY line_id) r ON r.line_id = l.line_id
    WHERE l.tenant_id = $1 AND l.checkout_id = c.checkout_id) l
WHERE c.tenant_id = $1 AND c.checkout_id = $2"""

INSERT_RETURNS = """
INSERT INTO ledger.checkout_returns (tenant_id, checkout_id, line_id, quantity, earn_reversed, burn_restored,
                                     earn_reversal_entry_id, burn_reversal_entry_id, created_at)
SELECT $1, $2, r.line_id, r.quantity, r.earn_reversed, r.burn_restored, $7, $8, $9
FROM unnest($3::varchar[], $4::bigint[], $5::bigint[], $6::bigint[])
     AS r(line_id, quantity, earn_reversed, burn_restored)"""

ACCOUNTS_OF_CUSTOMER = f"""
SELECT {_ACCOUNT} FROM ledger.accounts a
WHERE a.tenant_id = $1 AND a.customer_id = $2 ORDER BY a.created_at, a.account_id"""

ENTRIES_OF_ACCOUNTS = f"""
SELECT {_ENTRY} FROM ledger.journal_entries e {_POSTINGS_OF_ENTRY}
WHERE e.tenant_id = $1
  AND e.entry_id IN (SELECT entry_id FROM ledger.postings WHERE tenant_id = $1 AND account_id = ANY($2::varchar[]))
ORDER BY e.created_at, e.entry_id"""

HOLDS_OF_ACCOUNTS = f"""
SELECT {_HOLD} FROM ledger.holds h WHERE h.tenant_id = $1 AND h.account_id = ANY($2::varchar[]) ORDER BY h.seq"""


# --- rows -> the domain's shapes ----------------------------------------------------------------


def _account(row) -> Account:
    return Account(
        row["account_id"],
        AccountKind(row["kind"]),
        row["posted"],
        row["pending"],
        row["held"],
        program_id=row["program_id"],
        customer_id=row["customer_id"],
        tier_code=row["tier_code"],
        created_at=row["created_at"],
    )


def _hold(row) -> Hold:
    return Hold(
        row["hold_id"],
        row["account_id"],
        row["amount"],
        row["expires_at"],
        HoldState(row["state"]),
        row["captured_amount"],
        row["seq"],
        row["reason"],
        row["source_ref"],
        row["capture_entry_id"],
        row["created_at"],
    )


def _lots(rows) -> tuple[Lot, ...]:
    return tuple(Lot(*row) for row in rows)


def _entry(row) -> Entry:
    postings = tuple(
        Posting(account, amount, Bucket(bucket), balance)
        for account, amount, bucket, balance in zip(
            row["accounts"] or (),
            row["amounts"] or (),
            row["buckets"] or (),
            row["balances"] or (),
            strict=True,
        )
    )
    return Entry(
        entry_id=row["entry_id"],
        program_id=row["program_id"],
        entry_type=EntryType(row["entry_type"]),
        asset_code=row["asset_code"],
        amount=row["amount"],
        postings=postings,
        created_at=row["created_at"],
        unrecovered_amount=row["unrecovered_amount"],
        reason=row["reason"],
        source_ref=row["source_ref"],
        idempotency_key=row["idempotency_key"],
        reversed_entry_id=row["reversed_entry_id"],
        hold_id=row["hold_id"],
        subject_account_id=row["subject_account_id"],
        counter_account_id=row["counter_account_id"],
        lot_id=row["lot_id"],
        restore_expires_at=row["restore_expires_at"],
        qualifying_account_id=row["qualifying_account_id"],
        qualifying_delta=row["qualifying_delta"],
    )


def _program(row) -> Program:
    rules_ = ProgramRules(
        asset_kind=AssetKind(row["asset_kind"]),
        asset_code=row["asset_code"],
        allow_overdraft=row["allow_overdraft"],
        expiry_policy=ExpiryPolicy(
            ExpiryRule(row["expiry_rule"]), row["expiry_months"], row["expiry_warning_days"]
        ),
        default_hold_ttl_seconds=row["default_hold_ttl_seconds"],
        tiers=tuple(Tier(**tier) for tier in row["tiers"]),
        tier_window_days=row["tier_window_days"],
    )
    system = {
        AccountKind(kind): account_id for kind, account_id in zip(row["kinds"], row["ids"], strict=True)
    }
    return Program(row["program_id"], row["display_name"], rules_, system, row["created_at"])


# --- programmes and accounts ------------------------------------------------------------------


async def program(uow: UnitOfWork, program_id: str) -> Program | None:
    row = await uow.connection.fetchrow(PROGRAM, uow.tenant, program_id)
    return _program(row) if row is not None else None


async def create_program(uow: UnitOfWork, program: Program) -> None:
    r = program.rules
    await uow.connection.execute(
        CREATE_PROGRAM,
        uow.tenant,
        program.program_id,
        program.display_name,
        r.asset_kind.value,
        r.asset_code,
        r.allow_overdraft,
        r.expiry_policy.rule.value,
        r.expiry_policy.months,
        r.default_hold_ttl_seconds,
        r.tier_window_days,
        [tier.__dict__ for tier in r.tiers],
        program.created_at,
        list(program.system.values()),
        [kind.value for kind in program.system],
        r.expiry_policy.warning_days,
    )


async def open_account(uow: UnitOfWork, account_id: str, program_id: str, customer_id: str) -> Account | None:
    """The new account, or None when the customer already has one in the programme."""
    row = await uow.connection.fetchrow(
        OPEN_ACCOUNT, uow.tenant, account_id, program_id, customer_id, uow.now
    )
    return _account(row) if row is not None else None


async def account_of_customer(uow: UnitOfWork, program_id: str, customer_id: str) -> Account | None:
    row = await uow.connection.fetchrow(ACCOUNT_OF_CUSTOMER, uow.tenant, program_id, customer_id)
    return _account(row) if row is not None else None


async def lock_accounts(uow: UnitOfWork, account_ids: Sequence[str]) -> list[Account]:
    return [_account(row) for row in await uow.connection.fetch(LOCK_ACCOUNTS, uow.tenant, list(account_ids))]


async def lock_account_of_hold(uow: UnitOfWork, hold_id: str) -> Account | None:
    row = await uow.connection.fetchrow(LOCK_ACCOUNT_OF_HOLD, uow.tenant, hold_id)
    return _account(row) if row is not None else None


async def lock_account_of_checkout(uow: UnitOfWork, checkout_id: str) -> Account | None:
    row = await uow.connection.fetchrow(LOCK_ACCOUNT_OF_CHECKOUT, uow.tenant, checkout_id)
    return _account(row) if row is not None else None


async def account_holds(uow: UnitOfWork, account_id: str, also: str | None = None) -> list[Hold]:
    """The account's active holds and the hold `also` names (read under the account's lock)."""
    return [_hold(row) for row in await uow.connection.fetch(ACCOUNT_HOLDS, uow.tenant, account_id, also)]


async def spendable_lots(uow: UnitOfWork, account_id: str, limit: int | None) -> tuple[Lot, ...]:
    return _lots(await uow.connection.fetch(SPENDABLE_LOTS, uow.tenant, account_id, limit))


async def lot(uow: UnitOfWork, account_id: str, lot_id: str) -> tuple[Lot, ...]:
    return _lots(await uow.connection.fetch(LOT, uow.tenant, account_id, lot_id))


async def all_lots(uow: UnitOfWork, account_id: str) -> tuple[Lot, ...]:
    return _lots(await uow.connection.fetch(ALL_LOTS, uow.tenant, account_id))


async def maturing_lots(uow: UnitOfWork, account_id: str) -> tuple[Lot, ...]:
    return _lots(await uow.connection.fetch(MATURING_LOTS, uow.tenant, account_id, uow.now))


async def due_lots(uow: UnitOfWork, account_id: str) -> tuple[Lot, ...]:
    return _lots(await uow.connection.fetch(DUE_LOTS, uow.tenant, account_id, uow.now))


# --- writing what a unit of work staged ----------------------------------------------------------


def _part_rows(journal: Journal) -> dict[str, list[tuple]]:
    """The rows of each part the journal needs written, in WRITE_PARTS' column order."""
    deltas = {a: d for a, d in journal.deltas.items() if any(d) or a in journal.qualifying}
    rows = {
        "entries": [
            (
                e.entry_id,
                e.entry_type.value,
                e.amount,
                e.unrecovered_amount,
                e.reason,
                e.source_ref,
                e.idempotency_key,
                e.reversed_entry_id,
                e.hold_id,
                e.subject_account_id,
                e.counter_account_id,
                e.lot_id,
                e.restore_expires_at,
                e.qualifying_account_id,
                e.qualifying_delta,
            )
            for e in journal.entries
        ],
        "postings": [
            (e.entry_id, p.account_id, p.amount, p.bucket.value, p.balance_after)
            for e in journal.entries
            for p in e.postings
        ],
        "new_lots": [
            (
                s.lot_id,
                s.account_id,
                s.entry_id,
                s.lot.amount,
                s.lot.expires_at,
                s.lot.pending,
                s.lot.available_at,
            )
            for s in journal.new_lots
        ],
        "consumed_lots": [(lot_id, delta, mature) for lot_id, (delta, mature) in journal.lot_updates.items()],
        "new_holds": [
            (h.hold_id, h.account_id, h.amount, h.expires_at, h.reason, h.source_ref)
            for h in journal.new_holds
        ],
        "settled_holds": [
            (h.hold_id, h.state.value, h.captured_amount, h.capture_entry_id)
            for h in journal.changed_holds.values()
        ],
        "tiers": list(journal.qualifying.items()),
        "balances": [(a, *d) for a, d in deltas.items()],
    }
    return {part: part_rows for part, part_rows in rows.items() if part_rows}


def _values(part_rows: list[tuple]) -> list:
    """A part's parameter values: row by row, column by column (arrays: one per column)."""
    if len(part_rows) <= SCALAR_ROWS:
        return [value for row in part_rows for value in row]
    return [list(column) for column in zip(*part_rows, strict=True)]


async def write(uow: UnitOfWork, journal: Journal, program: Program) -> dict[str, tuple[str, int]]:
    """Write what `journal` staged (all of one programme's) in one statement; the tier each tracked
    account is in now, with its qualifying points in the window."""
    rows = _part_rows(journal)
    shape = tuple((part, min(len(rows[part]), SCALAR_ROWS + 1)) for part in WRITE_PARTS if part in rows)
    statement, layout = write_statement(shape)
    values: dict[str, object] = {
        "tenant": uow.tenant,
        "program": program.program_id,
        "asset_code": program.rules.asset_code,
        "now": journal.now,
    }
    if "tiers" in rows:
        ladder = rules.tier_ladder(program.rules.tiers)
        values["ladder_codes"] = [t.code for t in ladder]
        values["ladder_thresholds"] = [t.qualifying_points for t in ladder]
        values["window_start"] = rules.tier_window_start(program.rules, journal.now)
    arguments: list = []
    for kind, key in layout:
        if kind == "value":
            arguments.append(values[key])
        else:
            arguments += _values(rows[key])
    result = await uow.connection.fetch(statement, *arguments)
    return {row["account_id"]: (row["tier_code"], row["points"]) for row in result if row["account_id"]}


# --- entries, holds, statements -------------------------------------------------------------------


async def entry(uow: UnitOfWork, entry_id: str) -> Entry | None:
    row = await uow.connection.fetchrow(ENTRY, uow.tenant, entry_id)
    return _entry(row) if row is not None else None


async def entry_by_key(uow: UnitOfWork, idempotency_key: str) -> Entry | None:
    row = await uow.connection.fetchrow(ENTRY_BY_KEY, uow.tenant, idempotency_key)
    return _entry(row) if row is not None else None


async def reversed_amounts(uow: UnitOfWork, entry_ids: Iterable[str]) -> dict[str, int]:
    rows = await uow.connection.fetch(REVERSED, uow.tenant, list(entry_ids))
    return {row["reversed_entry_id"]: row["total"] for row in rows}


async def read_account(
    uow: UnitOfWork, *, account_id: str = "", program_id: str = "", customer_id: str = ""
) -> tuple[Account, list[tuple[datetime, int]], bool] | None:
    """An account as stored (a system account with its summed balance), its next expiry dates, and
    whether something is due that the stored balance does not show yet."""
    if account_id:
        row = await uow.connection.fetchrow(READ_ACCOUNT, uow.tenant, uow.now, account_id)
    else:
        row = await uow.connection.fetchrow(
            READ_ACCOUNT_OF_CUSTOMER, uow.tenant, uow.now, program_id, customer_id
        )
    if row is None:
        return None
    account = _account(row)
    if row["system_posted"] is not None:
        account = Account(
            account.account_id,
            account.kind,
            row["system_posted"],
            program_id=account.program_id,
            created_at=account.created_at,
        )
    expiring = list(zip(row["expiries"] or (), row["amounts"] or (), strict=True))
    return account, expiring, row["unsettled"]


async def account_snapshot(uow: UnitOfWork, account_id: str) -> tuple[Account, list[Hold]]:
    """The account with all its lots, and its active holds, as of one moment (one snapshot)."""
    async with uow.connection.transaction(isolation="repeatable_read", readonly=True):
        (account,) = [_account(row) for row in await uow.connection.fetch(ACCOUNT, uow.tenant, account_id)]
        holds = [
            _hold(row) for row in await uow.connection.fetch(ACCOUNT_HOLDS, uow.tenant, account_id, None)
        ]
        lots = _lots(await uow.connection.fetch(ALL_LOTS, uow.tenant, account_id))
    return replace(account, lots=lots), holds


async def hold(uow: UnitOfWork, hold_id: str) -> Hold | None:
    row = await uow.connection.fetchrow(HOLD, uow.tenant, hold_id)
    return _hold(row) if row is not None else None


async def account_exists(uow: UnitOfWork, account_id: str) -> bool:
    return bool(await uow.connection.fetchval(ACCOUNT_EXISTS, uow.tenant, account_id))


async def statement_lines(uow: UnitOfWork, account_id: str, before: int | None, limit: int) -> list:
    """Newest first: (entry_id, entry_type, amount, balance_after, reason, source_ref, created_at, last_id)."""
    return await uow.connection.fetch(STATEMENT_LINES, uow.tenant, account_id, before, limit)


# --- runs ---------------------------------------------------------------------------------------


async def due_accounts(uow: UnitOfWork, program_id: str | None) -> list[str]:
    return [
        row["account_id"] for row in await uow.connection.fetch(DUE_ACCOUNTS, uow.tenant, uow.now, program_id)
    ]


async def warn_expiring_lots(uow: UnitOfWork) -> list:
    """Up to WARN_CHUNK lots newly inside their warning window, marked warned: per account
    (account_id, customer_id, program_id, amount, expires_at, lots)."""
    return await uow.connection.fetch(WARN_LOTS, uow.tenant, uow.now)


async def program_ids(uow: UnitOfWork) -> list[str]:
    return [row["program_id"] for row in await uow.connection.fetch(PROGRAM_IDS, uow.tenant)]


async def qualifying_in_program(uow: UnitOfWork, program: Program) -> list:
    """Every customer account of the programme: (account_id, customer_id, tier_code, points)."""
    start = rules.tier_window_start(program.rules, uow.now)
    return await uow.connection.fetch(QUALIFYING_IN_PROGRAM, uow.tenant, program.program_id, start)


async def set_tiers(uow: UnitOfWork, changes: Sequence[tuple[str, str, str]]) -> set[str]:
    """(account, old tier, new tier) -> the accounts changed (those still in their old tier)."""
    rows = await uow.connection.fetch(
        SET_TIERS, uow.tenant, [c[0] for c in changes], [c[1] for c in changes], [c[2] for c in changes]
    )
    return {row["account_id"] for row in rows}


async def tenants(connection: asyncpg.Connection) -> list[str]:
    return [row["tenant_id"] for row in await connection.fetch(TENANTS)]


# --- checkouts ----------------------------------------------------------------------------------


async def checkout_exists(uow: UnitOfWork, checkout_id: str) -> bool:
    return bool(await uow.connection.fetchval(CHECKOUT_EXISTS, uow.tenant, checkout_id))


async def insert_checkout(uow: UnitOfWork, checkout: Checkout, hold_id: str | None) -> None:
    lines = checkout.lines
    try:
        await uow.connection.execute(
            INSERT_CHECKOUT,
            uow.tenant,
            checkout.checkout_id,
            checkout.account_id,
            checkout.program_id,
            checkout.earn_entry_id,
            checkout.burn_entry_id,
            hold_id,
            uow.now,
            [line.line_id for line in lines],
            [line.quantity for line in lines],
            [line.earn_points for line in lines],
            [line.burn_points for line in lines],
        )
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name != "checkouts_pkey":
            raise
        raise AlreadyExists(
            Reason.CHECKOUT_ALREADY_SETTLED, "this checkout was already settled", field="checkout_id"
        ) from None


async def make_available_now(uow: UnitOfWork, entry_id: str) -> int:
    """The entry's pending lots become due now (the next tidy-up of the account matures them)."""
    return await uow.connection.fetchval(MAKE_AVAILABLE_NOW, uow.tenant, entry_id, uow.now)


async def checkout(uow: UnitOfWork, checkout_id: str) -> Checkout | None:
    row = await uow.connection.fetchrow(CHECKOUT, uow.tenant, checkout_id)
    if row is None:
        return None
    lines = tuple(
        CheckoutLine(*line)
        for line in zip(
            row["ids"] or (), row["quantities"] or (), row["earns"] or (), row["burns"] or (), strict=True
        )
    )
    return Checkout(
        checkout_id,
        row["account_id"],
        row["program_id"],
        row["earn_entry_id"],
        row["burn_entry_id"],
        lines,
        dict(zip(row["ids"] or (), row["returned"] or (), strict=True)),
    )


async def insert_returns(
    uow: UnitOfWork,
    checkout_id: str,
    returns: Sequence[LineReturn],
    earn_reversal: str | None,
    burn_reversal: str | None,
) -> None:
    await uow.connection.execute(
        INSERT_RETURNS,
        uow.tenant,
        checkout_id,
        [r.line_id for r in returns],
        [r.quantity for r in returns],
        [r.earn_reversed for r in returns],
        [r.burn_restored for r in returns],
        earn_reversal,
        burn_reversal,
        uow.now,
    )


# --- customer data ------------------------------------------------------------------------------


async def accounts_of_customer(uow: UnitOfWork, customer_id: str) -> list[Account]:
    return [
        _account(row) for row in await uow.connection.fetch(ACCOUNTS_OF_CUSTOMER, uow.tenant, customer_id)
    ]


async def entries_of_accounts(uow: UnitOfWork, account_ids: Sequence[str]) -> list[Entry]:
    return [
        _entry(row) for row in await uow.connection.fetch(ENTRIES_OF_ACCOUNTS, uow.tenant, list(account_ids))
    ]


async def holds_of_accounts(uow: UnitOfWork, account_ids: Sequence[str]) -> list[Hold]:
    return [
        _hold(row) for row in await uow.connection.fetch(HOLDS_OF_ACCOUNTS, uow.tenant, list(account_ids))
    ]
