"""A campaign's lifecycle: which state changes are legal, and the state time gives it.

Stored states change only by request (activate, pause, archive); time moves a campaign on without a
write: SCHEDULED is ACTIVE from its start, SCHEDULED and ACTIVE are ENDED from its end. Reads and the
compiled catalog both use `effective_state`, so nothing has to run at the exact moment.

    DRAFT ──activate──> SCHEDULED / ACTIVE ──pause──> PAUSED ──activate──> SCHEDULED / ACTIVE
    any but ARCHIVED ──archive──> ARCHIVED (final)          only DRAFT can be deleted
"""

import enum
from dataclasses import dataclass
from datetime import datetime


class State(enum.Enum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    PAUSED = "paused"
    ENDED = "ended"
    ARCHIVED = "archived"


class Action(enum.Enum):
    ACTIVATE = "activate"
    PAUSE = "pause"
    ARCHIVE = "archive"
    DELETE = "delete"
    EDIT = "edit"


@dataclass(frozen=True)
class Window:
    """A campaign's validity window; None = open."""

    start: datetime | None = None
    end: datetime | None = None


class TransitionRefused(ValueError):
    """The action is not legal from the campaign's state; the message says why."""


LIVE = frozenset({State.SCHEDULED, State.ACTIVE})
# Where each action may start from (EDIT: the campaign may still be changed).
ALLOWED_FROM = {
    Action.ACTIVATE: frozenset({State.DRAFT, State.PAUSED, State.SCHEDULED, State.ACTIVE}),
    Action.PAUSE: frozenset({State.SCHEDULED, State.ACTIVE, State.PAUSED}),
    Action.ARCHIVE: frozenset(State) - {State.ARCHIVED},
    Action.DELETE: frozenset({State.DRAFT}),
    Action.EDIT: frozenset({State.DRAFT, State.SCHEDULED, State.ACTIVE, State.PAUSED}),
}


def effective_state(stored: State, window: Window, now: datetime) -> State:
    """The state a campaign is in at `now`, given what was stored and its window."""
    if stored in LIVE:
        if window.end is not None and now >= window.end:
            return State.ENDED
        if window.start is not None and now < window.start:
            return State.SCHEDULED
        return State.ACTIVE
    return stored


def require_allowed(action: Action, stored: State, window: Window, now: datetime) -> State:
    """The effective state, if `action` may start from it; TransitionRefused otherwise."""
    state = effective_state(stored, window, now)
    if state not in ALLOWED_FROM[action]:
        raise TransitionRefused(f"a campaign in state {state.name} cannot {action.value}")
    return state


def activate(stored: State, window: Window, now: datetime) -> State:
    """ACTIVE, or SCHEDULED until its start; a campaign whose window is over cannot start."""
    require_allowed(Action.ACTIVATE, stored, window, now)
    if window.end is not None and now >= window.end:
        raise TransitionRefused("the campaign's schedule has already ended")
    return effective_state(State.ACTIVE, window, now)


def pause(stored: State, window: Window, now: datetime) -> State:
    require_allowed(Action.PAUSE, stored, window, now)
    return State.PAUSED


def archive(stored: State, window: Window, now: datetime) -> State:
    require_allowed(Action.ARCHIVE, stored, window, now)
    return State.ARCHIVED
