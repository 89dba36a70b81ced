"""The ledger's domain: pure types and rules, no I/O. `rules` decides, `memory` is the reference model."""
