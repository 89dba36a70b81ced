"""The notification service's pure rules: templates, consent and channel choice, quiet hours,
URL policy, signatures and what an attempt's outcome means."""

from datetime import UTC, date, datetime

import pytest
from hypothesis import given, strategies as st

from loyalty_notification.domain import delivery, policy, signing, targets, templates
from loyalty_notification.domain.model import (
    Channel,
    Purpose,
    QuietHours,
    Status,
    Suppression,
    Template,
    TemplateState,
    Variant,
)


def _template(*variants: Variant, default_locale: str = "en") -> Template:
    return Template("t", "k", "", Purpose.TRANSACTIONAL, TemplateState.ACTIVE, default_locale, variants)


def test_the_locale_chain_goes_from_the_region_to_the_language_to_the_default():
    assert templates.locale_chain("pt-BR", "en") == ["pt-br", "pt", "en"]
    assert templates.locale_chain("", "de") == ["de"]
    assert templates.locale_chain("zh-Hant-TW", "en") == ["zh-hant-tw", "zh-hant", "zh", "en"]


def test_the_variant_is_the_channels_first_match_along_the_chain():
    pt = Variant(Channel.EMAIL, "pt", body="pt")
    en_sms = Variant(Channel.SMS, "en", body="sms")
    template = _template(pt, Variant(Channel.EMAIL, "en", body="en"), en_sms)
    assert templates.choose_variant(template, Channel.EMAIL, "pt-BR") is pt
    assert templates.choose_variant(template, Channel.SMS, "pt-BR") is en_sms
    assert templates.choose_variant(template, Channel.PUSH, "pt-BR") is None
    assert templates.channels_of(template) == [Channel.EMAIL, Channel.SMS]


def test_rendering_is_strict_about_top_level_and_nested_values():
    variant = Variant(Channel.EMAIL, "en", subject="Hi {{ customer.given_name }}", body="{{ points }}")
    with pytest.raises(templates.MissingVariables) as missing:
        templates.render(variant, {"customer": {"given_name": "A"}})
    assert missing.value.names == ["points"]
    with pytest.raises(templates.MissingVariables):
        templates.render(variant, {"customer": {}, "points": 1})


def test_html_is_autoescaped_and_text_is_not():
    variant = Variant(
        Channel.EMAIL, "en", subject="{{ name }}", body="{{ name }}", html_body="<p>{{ name }}</p>"
    )
    rendered = templates.render(variant, {"name": "<script>x</script> & co"})
    assert rendered.body == "<script>x</script> & co"
    assert rendered.html_body == "<p>&lt;script&gt;x&lt;/script&gt; &amp; co</p>"


def test_the_sandbox_refuses_python_internals():
    variant = Variant(Channel.SMS, "en", body="{{ ''.__class__.__mro__ }}")
    with pytest.raises(Exception, match=r"unsafe|not safely"):
        templates.render(variant, {})


def test_money_and_numbers_follow_the_locale():
    variant = Variant(Channel.SMS, "de", body="{{ n | number }} / {{ m | money }}")
    assert (
        templates.render(variant, {"n": 1234567, "m": templates.Money("EUR", 123456)}).body
        == "1.234.567 / 1.234,56 EUR"
    )
    yen = Variant(Channel.SMS, "en", body="{{ m | money }}")
    assert templates.render(yen, {"m": templates.Money("JPY", 1500)}).body == "1,500 JPY"


@pytest.mark.parametrize(
    ("locale", "shown"),
    [
        ("de", "1. Januar 2031"),
        ("en", "January 1, 2031"),
        ("pt-BR", "1 de janeiro de 2031"),
        ("de-XX", "1. Januar 2031"),  # a region CLDR lacks: its language
        ("zz", "January 1, 2031"),  # a language CLDR lacks: English
    ],
)
def test_dates_are_shown_in_the_locales_long_form(locale, shown):
    variant = Variant(Channel.SMS, locale, body="{{ d | date }}")
    assert templates.render(variant, {"d": date(2031, 1, 1)}).body == shown


def test_a_datetime_shows_its_own_zones_date():
    variant = Variant(Channel.SMS, "en", body="{{ d | date }}")
    late = datetime(2030, 12, 31, 23, 30, tzinfo=UTC)
    assert templates.render(variant, {"d": late}).body == "December 31, 2030"
    berlin = policy.local_zone("Europe/Berlin", None)
    assert templates.render(variant, {"d": late.astimezone(berlin)}).body == "January 1, 2031"


def test_the_local_zone_is_the_customers_else_the_tenants_else_utc():
    assert policy.local_zone("Asia/Tokyo", QUIET).key == "Asia/Tokyo"
    assert policy.local_zone("", QUIET).key == "Europe/Berlin"
    assert policy.local_zone("Not/AZone", None).key == "UTC"


def test_syntax_problems_name_the_variant_field_and_line():
    problems = templates.syntax_problems((Variant(Channel.SMS, "en", body="ok\n{% if %}"),))
    assert [p.field for p in problems] == ["variants[0].body"]
    assert problems[0].description.startswith("line 2")


def test_marketing_needs_a_grant_and_transactional_only_no_withdrawal():
    grant = policy.ConsentAnswer(Channel.EMAIL, Purpose.MARKETING, True)
    withdrawn = policy.ConsentAnswer(Channel.SMS, Purpose.TRANSACTIONAL, False)
    assert policy.allowed([grant], Channel.EMAIL, Purpose.MARKETING)
    assert not policy.allowed([grant], Channel.SMS, Purpose.MARKETING)
    assert policy.allowed([], Channel.SMS, Purpose.TRANSACTIONAL)
    assert not policy.allowed([withdrawn], Channel.SMS, Purpose.TRANSACTIONAL)


def test_the_channel_is_the_first_that_qualifies_else_the_most_telling_reason():
    email = policy.Candidate(Channel.EMAIL, "", True)
    sms = policy.Candidate(Channel.SMS, "+4912345678", True)
    granted = [policy.ConsentAnswer(Channel.SMS, Purpose.MARKETING, True)]
    assert policy.choose_channel([email, sms], granted, Purpose.MARKETING) is sms
    assert policy.choose_channel([email, sms], [], Purpose.MARKETING) is Suppression.NO_CONSENT
    assert policy.choose_channel([email], [], Purpose.TRANSACTIONAL) is Suppression.NO_CONTACT_POINT
    assert (
        policy.choose_channel([policy.Candidate(Channel.PUSH, "x", False)], [], Purpose.TRANSACTIONAL)
        is Suppression.NO_VARIANT
    )


QUIET = QuietHours(22 * 60, 7 * 60, "Europe/Berlin")


@pytest.mark.parametrize(
    ("at", "zone", "until"),
    [
        (datetime(2030, 1, 15, 22, 30, tzinfo=UTC), "", datetime(2030, 1, 16, 6, 0, tzinfo=UTC)),  # 23:30 CET
        (datetime(2030, 1, 15, 3, 0, tzinfo=UTC), "", datetime(2030, 1, 15, 6, 0, tzinfo=UTC)),  # 04:00 CET
        (datetime(2030, 1, 15, 12, 0, tzinfo=UTC), "", None),
        (datetime(2030, 1, 15, 12, 0, tzinfo=UTC), "Asia/Tokyo", None),  # 21:00 in Tokyo
        (datetime(2030, 1, 15, 14, 0, tzinfo=UTC), "Asia/Tokyo", datetime(2030, 1, 15, 22, 0, tzinfo=UTC)),
        (datetime(2030, 1, 15, 22, 30, tzinfo=UTC), "Not/AZone", datetime(2030, 1, 16, 6, 0, tzinfo=UTC)),
    ],
)
def test_quiet_hours_end_in_the_customers_zone(at, zone, until):
    assert policy.quiet_until(QUIET, zone, at) == until


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_a_deferred_time_is_never_inside_quiet_hours_and_never_earlier(at):
    until = policy.quiet_until(QUIET, "America/New_York", at)
    if until is not None:
        assert until > at
        assert policy.quiet_until(QUIET, "America/New_York", until.astimezone(UTC)) is None


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local or metadata"),
        ("fe80::1", "link-local or metadata"),
        ("10.0.0.5", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("0.0.0.0", "not a public unicast address"),
        ("224.0.0.1", "not a public unicast address"),
        ("93.184.216.34", None),
    ],
)
def test_the_url_policy_refuses_what_only_the_service_could_reach(address, refused):
    assert targets.refused_address(address, allow_loopback=False) == refused


def test_allowing_loopback_admits_only_loopback():
    assert targets.refused_address("127.0.0.1", allow_loopback=True) is None
    assert targets.refused_address("169.254.169.254", allow_loopback=True) is not None
    with pytest.raises(targets.TargetRefused):
        targets.parse_webhook_url("file:///etc/passwd")
    with pytest.raises(targets.TargetRefused):
        targets.parse_webhook_url("http://user:pw@example.com/")


def test_a_signature_verifies_only_for_its_body_secret_and_time():
    header = signing.sign_webhook("s", b"{}", 1000)
    assert signing.verify_webhook("s", header, b"{}", 1100) == 1000
    for secret, body, now in (("x", b"{}", 1000), ("s", b"{ }", 1000), ("s", b"{}", 1000 + 301)):
        with pytest.raises(signing.SignatureRefused):
            signing.verify_webhook(secret, header, body, now)


def test_an_unsubscribe_token_cannot_be_altered():
    subject = signing.Unsubscription("t1", "c1", "email")
    token = signing.unsubscribe_token("s", subject)
    assert signing.read_unsubscribe_token("s", token) == subject
    assert signing.read_unsubscribe_token("other", token) is None
    forged = signing.unsubscribe_token("s", signing.Unsubscription("t1", "c2", "email")).split(".")[0]
    assert signing.read_unsubscribe_token("s", f"{forged}.{token.split('.')[1]}") is None
    assert signing.read_unsubscribe_token("s", "garbage") is None


def test_outcomes_retry_5xx_and_timeouts_and_give_up_after_the_last_attempt():
    assert delivery.http_outcome(503).status.value == "retryable"
    assert delivery.http_outcome(429).status.value == "retryable"
    assert delivery.http_outcome(404).status.value == "permanent"
    assert delivery.smtp_outcome(451).status.value == "retryable"
    assert delivery.smtp_outcome(550).status.value == "permanent"
    retry = delivery.retryable("timeout")
    assert delivery.after_attempt(retry, 2, 3) == delivery.NextStep(Status.SENDING, retry=True)
    assert delivery.after_attempt(retry, 3, 3).status is Status.FAILED
    assert delivery.after_attempt(delivery.accepted(), 1, 3).status is Status.SENT


def test_a_tracking_token_reads_back_and_never_passes_for_an_unsubscribe_token():
    token = signing.tracking_token("s", signing.Tracked("acme", "m-1"))
    assert signing.read_tracking_token("s", token) == signing.Tracked("acme", "m-1")
    assert signing.read_tracking_token("other", token) is None
    assert signing.read_unsubscribe_token("s", token) is None
    unsubscribe = signing.unsubscribe_token("s", signing.Unsubscription("acme", "c-1", "email"))
    assert signing.read_tracking_token("s", unsubscribe) is None
    _payload, mac = token.split(".")
    forged = signing._b64(b"other|m-1") + "." + mac
    assert signing.read_tracking_token("s", forged) is None
    assert signing.read_tracking_token("s", "") is None and signing.read_tracking_token("s", "a.b.c") is None


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<html><body><p>Hi</p></body></html>", "<html><body><p>Hi</p>{img}</body></html>"),
        ("<p>Hi</p>", "<p>Hi</p>{img}"),
        ("<BODY>a</Body ><body>b</BODY>", "<BODY>a</Body ><body>b{img}</BODY>"),
    ],
)
def test_the_tracking_pixel_goes_before_the_last_closing_body_tag(html, expected):
    img = '<img src="https://t.example/open?token=a&amp;b" width="1" height="1" alt="">'
    assert delivery.with_pixel(html, "https://t.example/open?token=a&b") == expected.format(img=img)
