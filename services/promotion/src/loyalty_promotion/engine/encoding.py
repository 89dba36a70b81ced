"""Protobuf <-> engine model."""


def decode_basket(basket):
    raise NotImplementedError


def decode_customer(customer):
    raise NotImplementedError


def encode_evaluation(evaluation):
    raise NotImplementedError
