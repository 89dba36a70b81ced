"""The fraud service: checkout, redemption and earn decisions, velocity rules, blocklists, review cases."""
