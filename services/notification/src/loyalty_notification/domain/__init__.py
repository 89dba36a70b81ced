"""The notification service's rules: pure functions and dataclasses, no I/O."""
