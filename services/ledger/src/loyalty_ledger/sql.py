"""The statements of the ledger's write path, as PostgreSQL text.

Every state change locks the customer account rows first and then writes what the domain planned
in as few statements as possible: CPU per statement (driver, SQLAlchemy, tracing), not PostgreSQL,
is what a posting costs. They are constants, so SQLAlchemy and asyncpg prepare each once per
connection. Arrays travel as one parameter each (`unnest`), so one text serves any number of
postings, lots or accounts.
"""

from sqlalchemy import text

_ACCOUNT = "account_id, program_id, customer_id, kind, posted, pending, held, tier_code, created_at"
_HOLD = (
    "hold_id, account_id, amount, captured_amount, state, expires_at, reason, source_ref, "
    "capture_entry_id, created_at"
)
_LOT = "lot_id, remaining, expires_at, seq, pending, available_at"

# Row locks in account-id order, so two transfers between the same accounts never deadlock.
LOCK_ACCOUNTS = text(f"""
SELECT {_ACCOUNT} FROM ledger.accounts
WHERE tenant_id = :tenant_id AND account_id = ANY(CAST(:account_ids AS varchar[]))
ORDER BY account_id
FOR UPDATE""")

# A hold never moves between accounts, so finding its account needs no lock of its own.
LOCK_ACCOUNT_OF_HOLD = text(f"""
SELECT {_ACCOUNT} FROM ledger.accounts
WHERE tenant_id = :tenant_id
  AND account_id = (SELECT account_id FROM ledger.holds WHERE tenant_id = :tenant_id AND hold_id = :hold_id)
FOR UPDATE""")

# Read under the account's lock (holds change only under it): the active holds, to void those that
# timed out, and the hold the call is about to settle, whatever its state.
ACCOUNT_HOLDS = text(f"""
SELECT {_HOLD} FROM ledger.holds
WHERE account_id = :account_id AND (state = 'ACTIVE' OR hold_id = :hold_id)""")

# Earliest expiry first, never-expiring last, then creation order: `rules.consume_lots`'s order, so
# a LIMIT gives a prefix of what a debit consumes (the `lots_spendable` index serves it in order).
SPENDABLE_LOTS = text(f"""
SELECT {_LOT} FROM ledger.lots
WHERE account_id = :account_id AND remaining > 0 AND NOT pending
ORDER BY expires_at, seq
LIMIT :limit""")

LOT = text(
    f"SELECT {_LOT} FROM ledger.lots WHERE lot_id = :lot_id AND account_id = :account_id AND remaining > 0"
)

MATURING_LOTS = text(f"""
SELECT {_LOT} FROM ledger.lots
WHERE account_id = :account_id AND remaining > 0 AND pending AND available_at <= :now""")

DUE_LOTS = text(f"""
SELECT {_LOT} FROM ledger.lots
WHERE account_id = :account_id AND remaining > 0 AND NOT pending AND expires_at <= :now""")

PLACE_HOLD = text("""
WITH hold AS (
    INSERT INTO ledger.holds (hold_id, tenant_id, account_id, amount, captured_amount, state, expires_at,
                              reason, source_ref, capture_entry_id, created_at)
    VALUES (:hold_id, :tenant_id, :account_id, :amount, 0, 'ACTIVE', :expires_at,
            :reason, :source_ref, NULL, :created_at)
)
UPDATE ledger.accounts SET held = held + :held_delta WHERE account_id = :account_id""")

# Release, or void timed-out holds: their points stop being held.
END_HOLDS = text("""
WITH ended AS (
    UPDATE ledger.holds SET state = :state WHERE hold_id = ANY(CAST(:hold_ids AS varchar[]))
)
UPDATE ledger.accounts SET held = held - :released WHERE account_id = :account_id""")

# One journal entry with everything that keeps balances in step with it: postings, customer balance
# deltas, consumed and new lots, the hold it captures (`hold_id`) or the entry it reverses
# (`reversed_entry_id`), if any, and its event in the outbox (the row `record_event` would write).
# Foreign keys are checked at the end of the statement, when the entry row exists.
# It answers the tier-qualifying points of the window before this entry (this entry's own row is not
# visible to its statement), when a qualifying account is given.
POST_ENTRY = text("""
WITH entry AS (
    INSERT INTO ledger.journal_entries (
        entry_id, tenant_id, program_id, entry_type, asset_code, amount, reversed_amount, unrecovered_amount,
        reason, source_ref, idempotency_key, reversed_entry_id, hold_id, subject_account_id,
        counter_account_id, lot_id, restore_expires_at, qualifying_account_id, qualifying_delta, created_at)
    VALUES (
        :entry_id, :tenant_id, :program_id, :entry_type, :asset_code, :amount, :reversed_amount,
        :unrecovered_amount,
        :reason, :source_ref, :idempotency_key, :reversed_entry_id, :hold_id, :subject_account_id,
        :counter_account_id, :lot_id, :restore_expires_at, :qualifying_account_id, :qualifying_delta,
        :created_at)
),
postings AS (
    INSERT INTO ledger.postings (entry_id, tenant_id, account_id, amount, bucket, balance_after)
    SELECT :entry_id, :tenant_id, p.account_id, p.amount, p.bucket, p.balance_after
    FROM unnest(CAST(:posting_accounts AS varchar[]), CAST(:posting_amounts AS bigint[]),
                CAST(:posting_buckets AS varchar[]), CAST(:posting_balances AS bigint[]))
         WITH ORDINALITY AS p(account_id, amount, bucket, balance_after, n)
    ORDER BY p.n
),
balances AS (
    UPDATE ledger.accounts AS a
    SET posted = a.posted + d.posted, pending = a.pending + d.pending, held = a.held + d.held
    FROM unnest(CAST(:balance_accounts AS varchar[]), CAST(:balance_posted AS bigint[]),
                CAST(:balance_pending AS bigint[]), CAST(:balance_held AS bigint[]))
         AS d(account_id, posted, pending, held)
    WHERE a.account_id = d.account_id
),
consumed_lots AS (
    UPDATE ledger.lots AS l
    SET remaining = l.remaining + u.delta, pending = l.pending AND NOT u.mature
    FROM unnest(CAST(:lot_update_ids AS varchar[]), CAST(:lot_update_deltas AS bigint[]),
                CAST(:lot_update_matures AS boolean[])) AS u(lot_id, delta, mature)
    WHERE l.lot_id = u.lot_id
),
new_lots AS (
    INSERT INTO ledger.lots (lot_id, tenant_id, account_id, entry_id, amount, remaining, expires_at, pending,
                             available_at)
    SELECT n.lot_id, :tenant_id, n.account_id, :entry_id, n.amount, n.amount, n.expires_at, n.pending,
           n.available_at
    FROM unnest(CAST(:new_lot_ids AS varchar[]), CAST(:new_lot_accounts AS varchar[]),
                CAST(:new_lot_amounts AS bigint[]), CAST(:new_lot_expiries AS timestamptz[]),
                CAST(:new_lot_pendings AS boolean[]), CAST(:new_lot_availables AS timestamptz[]))
         WITH ORDINALITY AS n(lot_id, account_id, amount, expires_at, pending, available_at, ord)
    ORDER BY n.ord
),
captured_hold AS (
    UPDATE ledger.holds SET state = 'CAPTURED', captured_amount = :captured_amount, capture_entry_id = :entry_id
    WHERE hold_id = :hold_id
),
reversed_entry AS (
    UPDATE ledger.journal_entries SET reversed_amount = reversed_amount + :reversal_amount
    WHERE entry_id = :reversed_entry_id
),
event AS (
    INSERT INTO ledger.outbox (tenant_id, event_type, key, payload, trace_context)
    SELECT :tenant_id, CAST(:event_type AS varchar), :event_key, CAST(:event_payload AS jsonb),
           CAST(:event_trace_context AS jsonb)
    WHERE :event_type IS NOT NULL
)
SELECT coalesce(sum(qualifying_delta), 0) AS qualifying
FROM ledger.journal_entries
WHERE qualifying_account_id = :window_account_id AND qualifying_delta <> 0 AND created_at >= :window_start""")
