"""A trigger's actions, pure: what they may say (checked on save), and the shorthand `reward` as
an action. Each action runs once per trigger, customer and rewarded event; the grant (one per
trigger and event) is that occurrence, and an action's key is the grant's id and its position.

Webhook URLs are https: the payload carries a customer id and perhaps a code, and the signature
proves who sent it but hides nothing and, over plain http, a proxy could still read the code.
Plain http is admitted only to localhost, where nothing travels over a network (local receivers
in development and tests)."""

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from loyalty.notification.v1 import template_pb2
from loyalty.promotion.v1 import trigger_pb2 as tpb
from loyalty_runtime.errors import FieldViolation, Reason

MAX_ACTIONS = 10
MAX_URL_LENGTH = 2048
MAX_SECRET_LENGTH = 256
MIN_SECRET_LENGTH = 16
MAX_VALID_FOR = timedelta(days=366)
MAX_POINTS = 10_000_000
MAX_KEY = 200
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class Refusal:
    reason: Reason
    violation: FieldViolation


def actions_of(trigger: tpb.Trigger) -> list[tpb.TriggerAction]:
    """What the trigger does: its actions, or its single reward as one action."""
    if trigger.actions:
        return list(trigger.actions)
    kind = trigger.reward.WhichOneof("kind")
    if kind == "points":
        return [tpb.TriggerAction(award_points=trigger.reward.points)]
    if kind == "voucher":
        return [tpb.TriggerAction(issue_code=trigger.reward.voucher)]
    return []


def points_action(trigger: tpb.Trigger) -> tpb.TriggerAction | None:
    return next((a for a in actions_of(trigger) if a.WhichOneof("kind") == "award_points"), None)


def webhook_url_problem(url: str) -> str | None:
    if not url or len(url) > MAX_URL_LENGTH:
        return f"a URL of 1 to {MAX_URL_LENGTH} characters is required"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return "the URL does not parse"
    if not parts.hostname or parts.username or parts.password:
        return "the URL needs a host and no user info"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and parts.hostname.lower() in LOCAL_HOSTS:
        return None
    return "the URL must be https (plain http only to localhost)"


def violations(trigger: tpb.Trigger, prefix: str = "trigger.") -> list[Refusal]:
    """Everything wrong with the reward and actions, each with its field and reason."""
    found: list[Refusal] = []

    def wrong(field: str, description: str, reason: Reason = Reason.TRIGGER_ACTION_INVALID) -> None:
        found.append(Refusal(reason, FieldViolation(prefix + field, description)))

    has_reward = trigger.reward.WhichOneof("kind") is not None
    if trigger.actions and has_reward:
        wrong("reward", "set either reward or actions")
    elif not trigger.actions and not has_reward:
        wrong("actions", "an action (or a reward) is required")
    if len(trigger.actions) > MAX_ACTIONS:
        wrong("actions", f"at most {MAX_ACTIONS} actions")
    if has_reward and not trigger.actions:
        kind = trigger.reward.WhichOneof("kind")
        _check(
            tpb.TriggerAction(
                **{"award_points" if kind == "points" else "issue_code": getattr(trigger.reward, kind)}
            ),
            f"reward.{kind}",
            wrong,
            shorthand=True,
        )
    points = 0
    for index, action in enumerate(trigger.actions[:MAX_ACTIONS]):
        points += action.WhichOneof("kind") == "award_points"
        _check(action, f"actions[{index}]", wrong)
    if points > 1:
        wrong("actions", "at most one award_points action")
    return found


def _check(action: tpb.TriggerAction, path: str, wrong, *, shorthand: bool = False) -> None:
    kind = action.WhichOneof("kind")
    here = path if shorthand else f"{path}.{kind}"
    if kind is None:
        wrong(path, "an action must set one kind")
    elif kind == "award_points":
        if not 1 <= action.award_points.points <= MAX_POINTS:
            wrong(f"{here}.points", f"must be 1..{MAX_POINTS}")
        expires = action.award_points
        if expires.HasField("expires_after") and expires.expires_after.ToTimedelta() <= timedelta(0):
            wrong(f"{here}.expires_after", "must be more than zero")
    elif kind == "issue_code":
        _voucher(action.issue_code, here, wrong)
    elif kind == "send_notification":
        notification = action.send_notification
        if not notification.template_key or len(notification.template_key) > MAX_KEY:
            wrong(f"{here}.template_key", f"a template key of 1 to {MAX_KEY} characters is required")
        known = set(template_pb2.NotificationChannel.values()) - {
            template_pb2.NOTIFICATION_CHANNEL_UNSPECIFIED
        }
        if any(channel not in known for channel in notification.channels):
            wrong(f"{here}.channels", "each channel must be a known one")
    elif kind == "add_to_segment":
        if not action.add_to_segment.segment_id:
            wrong(f"{here}.segment_id", "a segment is required")
    elif kind == "call_webhook":
        _webhook(action.call_webhook, here, wrong)


def _voucher(voucher, here: str, wrong) -> None:
    if not voucher.campaign_id:
        wrong(f"{here}.campaign_id", "a voucher campaign is required")
    if voucher.HasField("valid_for") and not timedelta(0) < voucher.valid_for.ToTimedelta() <= MAX_VALID_FOR:
        wrong(f"{here}.valid_for", "must be more than zero and at most a year")


def _webhook(webhook: tpb.WebhookAction, here: str, wrong) -> None:
    problem = webhook_url_problem(webhook.url)
    if problem:
        wrong(f"{here}.url", problem, Reason.TRIGGER_WEBHOOK_URL_REFUSED)
    if not MIN_SECRET_LENGTH <= len(webhook.secret) <= MAX_SECRET_LENGTH:
        wrong(
            f"{here}.secret", f"a secret of {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters is required"
        )
    if webhook.HasField("issue_code"):
        _voucher(webhook.issue_code, f"{here}.issue_code", wrong)


def code_campaigns(trigger: tpb.Trigger, prefix: str = "trigger.") -> list[tuple[str, str]]:
    """(campaign id, field) of every campaign an action issues codes from."""
    if not trigger.actions:
        voucher = trigger.reward.voucher
        return [(voucher.campaign_id, f"{prefix}reward.voucher.campaign_id")] if voucher.campaign_id else []
    found = []
    for index, action in enumerate(trigger.actions):
        path = f"{prefix}actions[{index}]"
        kind = action.WhichOneof("kind")
        if kind == "issue_code":
            found.append((action.issue_code.campaign_id, f"{path}.issue_code.campaign_id"))
        elif kind == "call_webhook" and action.call_webhook.HasField("issue_code"):
            found.append(
                (action.call_webhook.issue_code.campaign_id, f"{path}.call_webhook.issue_code.campaign_id")
            )
    return found


def without_secrets(trigger: tpb.Trigger) -> None:
    """Blank every webhook secret (answers never carry them)."""
    for action in trigger.actions:
        if action.WhichOneof("kind") == "call_webhook":
            action.call_webhook.secret = ""


def keep_secrets(updated: tpb.Trigger, stored: tpb.Trigger) -> None:
    """An update sending a webhook action without its secret keeps the stored secret of the same URL."""
    secrets = {
        a.call_webhook.url: a.call_webhook.secret
        for a in stored.actions
        if a.WhichOneof("kind") == "call_webhook"
    }
    for action in updated.actions:
        if action.WhichOneof("kind") == "call_webhook" and not action.call_webhook.secret:
            action.call_webhook.secret = secrets.get(action.call_webhook.url, "")
