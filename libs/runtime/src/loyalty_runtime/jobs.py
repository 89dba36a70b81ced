"""Durable work in PostgreSQL: jobs a use case enqueues in its own transaction, and periodic tasks.

(Declarations only here; see the module that runs them.)
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    """A kind of job: `run(uow, payload)` in a unit of work of the tenant that enqueued it."""

    name: str
    payload: type  # the protobuf message the job carries
    run: Callable[..., Awaitable[None]]
    max_attempts: int = 5


@dataclass(frozen=True)
class Schedule:
    """A periodic task, run once per period across all replicas: `run(resources)`, every
    `every(settings)` seconds (0 turns it off)."""

    name: str
    every: Callable[..., float]
    run: Callable[..., Awaitable[None]]
