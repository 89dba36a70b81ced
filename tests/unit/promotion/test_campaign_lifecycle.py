"""The campaign lifecycle: every (action, state) pair, and the states time gives a live campaign."""

from datetime import UTC, datetime, timedelta

import pytest

from loyalty_promotion.domain import lifecycle
from loyalty_promotion.domain.lifecycle import ALLOWED_FROM, Action, State, TransitionRefused, Window

NOW = datetime(2030, 3, 30, 12, tzinfo=UTC)
OPEN = Window()
FUTURE = Window(start=NOW + timedelta(days=1))
OVER = Window(end=NOW)
RUNNING = Window(start=NOW - timedelta(days=1), end=NOW + timedelta(days=1))

TRANSITIONS = {
    Action.ACTIVATE: lifecycle.activate,
    Action.PAUSE: lifecycle.pause,
    Action.ARCHIVE: lifecycle.archive,
}
EXPECTED = {
    (Action.ACTIVATE, State.DRAFT): State.ACTIVE,
    (Action.ACTIVATE, State.PAUSED): State.ACTIVE,
    (Action.ACTIVATE, State.ACTIVE): State.ACTIVE,
    (Action.ACTIVATE, State.SCHEDULED): State.ACTIVE,
    (Action.PAUSE, State.ACTIVE): State.PAUSED,
    (Action.PAUSE, State.SCHEDULED): State.PAUSED,
    (Action.PAUSE, State.PAUSED): State.PAUSED,
    (Action.ARCHIVE, State.DRAFT): State.ARCHIVED,
    (Action.ARCHIVE, State.SCHEDULED): State.ARCHIVED,
    (Action.ARCHIVE, State.ACTIVE): State.ARCHIVED,
    (Action.ARCHIVE, State.PAUSED): State.ARCHIVED,
    (Action.ARCHIVE, State.ENDED): State.ARCHIVED,
}


@pytest.mark.parametrize("action", list(TRANSITIONS))
@pytest.mark.parametrize("state", list(State))
def test_every_action_from_every_state(action, state):
    transition = TRANSITIONS[action]
    expected = EXPECTED.get((action, state))
    if expected is None:
        with pytest.raises(TransitionRefused):
            transition(state, OPEN, NOW)
    else:
        assert transition(state, OPEN, NOW) is expected


def test_only_drafts_can_be_deleted():
    assert ALLOWED_FROM[Action.DELETE] == {State.DRAFT}
    lifecycle.require_allowed(Action.DELETE, State.DRAFT, OPEN, NOW)
    for state in set(State) - {State.DRAFT}:
        with pytest.raises(TransitionRefused):
            lifecycle.require_allowed(Action.DELETE, state, OPEN, NOW)


def test_archived_and_ended_campaigns_cannot_be_edited():
    for state in (State.ARCHIVED, State.ENDED):
        with pytest.raises(TransitionRefused):
            lifecycle.require_allowed(Action.EDIT, state, OPEN, NOW)
    # A live campaign whose window closed is ENDED for edits too.
    with pytest.raises(TransitionRefused):
        lifecycle.require_allowed(Action.EDIT, State.ACTIVE, OVER, NOW)


def test_activation_before_the_start_schedules_it():
    assert lifecycle.activate(State.DRAFT, FUTURE, NOW) is State.SCHEDULED
    assert lifecycle.activate(State.PAUSED, RUNNING, NOW) is State.ACTIVE


def test_a_campaign_whose_window_is_over_cannot_start():
    with pytest.raises(TransitionRefused, match="ended"):
        lifecycle.activate(State.DRAFT, OVER, NOW)


@pytest.mark.parametrize(
    ("stored", "window", "moment", "expected"),
    [
        (State.SCHEDULED, FUTURE, NOW, State.SCHEDULED),
        # The start is inclusive, the end exclusive (schedule.proto).
        (State.SCHEDULED, FUTURE, FUTURE.start, State.ACTIVE),
        (State.ACTIVE, OVER, NOW - timedelta(microseconds=1), State.ACTIVE),
        (State.ACTIVE, OVER, NOW, State.ENDED),
        (State.SCHEDULED, OVER, NOW, State.ENDED),
        (State.PAUSED, OVER, NOW, State.PAUSED),
        (State.DRAFT, OVER, NOW, State.DRAFT),
        (State.ARCHIVED, RUNNING, NOW, State.ARCHIVED),
    ],
)
def test_time_moves_live_campaigns_on(stored, window, moment, expected):
    assert lifecycle.effective_state(stored, window, moment) is expected
