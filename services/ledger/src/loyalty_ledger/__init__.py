"""Points ledger service: double-entry journal, holds, lots with expiry, tiers, reversals."""
