"""Campaign and basket validation."""


def validate_campaign(campaign_input):
    raise NotImplementedError


def validate_basket(basket):
    raise NotImplementedError
