"""Evaluation of one basket against a Catalog."""


def evaluate(catalog, basket, customer, codes, now):
    raise NotImplementedError


def conflicting_campaigns(catalog, campaign_id, baskets, customer, now):
    raise NotImplementedError
