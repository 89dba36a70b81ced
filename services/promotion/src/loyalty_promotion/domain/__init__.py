"""The promotion service's own rules (pure, no I/O): campaign lifecycle and edits. The evaluation
rules are the engine's (loyalty_promotion.engine)."""
