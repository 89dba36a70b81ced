"""What a delivery attempt's outcome means for the message.

A provider answers Accepted, Retryable (HTTP 5xx, 408, 429, a timeout, a refused connection; SMTP
4xx) or Permanent (HTTP 4xx; SMTP 5xx; a target the URL policy refuses). Retryable attempts are
repeated with exponential backoff and jitter until `max_attempts` have been made: then the message
is FAILED, the dead letter, with the last error as its reason.
"""

import re
from dataclasses import dataclass

from loyalty_notification.domain.model import AttemptStatus, Status

MAX_ERROR_TEXT = 500
BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Outcome:
    status: AttemptStatus
    provider_message_id: str = ""
    error_code: str = ""
    error_message: str = ""


def accepted(provider_message_id: str = "") -> Outcome:
    return Outcome(AttemptStatus.SUCCEEDED, provider_message_id=provider_message_id[:200])


def retryable(code: str, text: str = "") -> Outcome:
    return Outcome(AttemptStatus.RETRYABLE, error_code=code[:40], error_message=text[:MAX_ERROR_TEXT])


def permanent(code: str, text: str = "") -> Outcome:
    return Outcome(AttemptStatus.PERMANENT, error_code=code[:40], error_message=text[:MAX_ERROR_TEXT])


def http_outcome(status_code: int, text: str = "", provider_message_id: str = "") -> Outcome:
    if 200 <= status_code < 300:
        return accepted(provider_message_id)
    code = f"http_{status_code}"
    if status_code in (408, 429) or status_code >= 500:
        return retryable(code, text)
    return permanent(code, text)


def smtp_outcome(reply_code: int, text: str = "") -> Outcome:
    code = f"smtp_{reply_code}"
    return permanent(code, text) if reply_code >= 500 else retryable(code, text)


@dataclass(frozen=True)
class NextStep:
    status: Status
    failure_reason: str = ""
    retry: bool = False


def with_pixel(html_body: str, url: str) -> str:
    """The HTML with an open-tracking image before its closing body tag (at the end without one).
    `url` is this service's own link (its token is base64url), escaped for the attribute anyway."""
    tag = f'<img src="{url.replace("&", "&amp;").replace(chr(34), "&quot;")}" width="1" height="1" alt="">'
    ends = list(BODY_END.finditer(html_body))
    if not ends:
        return html_body + tag
    at = ends[-1].start()
    return html_body[:at] + tag + html_body[at:]


def after_attempt(outcome: Outcome, attempt_number: int, max_attempts: int) -> NextStep:
    if outcome.status is AttemptStatus.SUCCEEDED:
        return NextStep(Status.SENT)
    if outcome.status is AttemptStatus.PERMANENT:
        return NextStep(Status.FAILED, f"refused by the provider: {outcome.error_code}")
    if attempt_number >= max_attempts:
        return NextStep(Status.FAILED, f"dead letter after {attempt_number} attempts: {outcome.error_code}")
    return NextStep(Status.SENDING, retry=True)
