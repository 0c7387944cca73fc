"""orders-py: weir's example order handler in Python (the same handler as orders-rust; the
behaviour is defined in plugins/README.md). Built with componentize-py against wit/ (world
message-handler); `wit_world` is the package componentize-py generates from the WIT."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import kv, publish
from wit_world.imports.types import (
    HandlerError,
    Message,
    Outcome,
    Outcome_Ack,
    Outcome_DeadLetter,
    Outgoing,
)

# Where enriched orders go.
DESTINATION = "orders.enriched"

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class Invalid(Exception):
    """The payload is not a valid order; the argument is the reason."""


def _refuse_constant(name: str) -> None:
    raise Invalid("payload is not JSON")  # NaN, Infinity: not JSON


def valid_name(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 64 and all(c in NAME_CHARS for c in value)


def parse_order(payload: bytes) -> tuple[str, str, int]:
    try:
        doc = json.loads(payload.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Invalid("payload is not JSON")
    if not isinstance(doc, dict):
        raise Invalid("payload is not a JSON object")
    order_id, customer, amount = doc.get("order_id"), doc.get("customer"), doc.get("amount")
    if not valid_name(order_id):
        raise Invalid("order_id must be 1 to 64 letters, digits, '-' or '_'")
    if not valid_name(customer):
        raise Invalid("customer must be 1 to 64 letters, digits, '-' or '_'")
    # bool is an int in Python; JSON true is not a number.
    number = isinstance(amount, (int, float)) and not isinstance(amount, bool)
    if not (number and _whole_in_range(amount)):
        raise Invalid("amount must be a whole number of cents from 1 to 100000000")
    return order_id, customer, int(amount)


def _whole_in_range(amount: float) -> bool:
    return 1 <= amount <= 100000000 and amount == int(amount)


def fail(message: str, retryable: bool) -> Err:
    return Err(HandlerError(message=message, retryable=retryable))


def host_error(error: object) -> Err:
    """A handler error for a refused kv or publish call: retryable when the store was unavailable."""
    if isinstance(error, HandlerError):
        return Err(error)
    if isinstance(error, kv.KvError_Unavailable):
        return fail(f"key-value store unavailable: {error.value}", True)
    return fail(f"orders: refused by the host: {error}", False)


class Handler(exports.Handler):
    def handle(self, message: Message) -> Outcome:
        try:
            order_id, customer, amount = parse_order(message.payload)
        except Invalid as why:
            return Outcome_DeadLetter(f"invalid order: {why}")
        key = f"orders/{customer}"
        try:
            return self.count_and_publish(key, order_id, customer, amount)
        except Err as e:
            raise host_error(e.value)

    def count_and_publish(self, key: str, order_id: str, customer: str, amount: int) -> Outcome:
        stored = kv.get(key)
        count = 0
        if stored is not None:
            text = stored.decode("ascii", "replace")
            if not text.isdigit():
                raise fail(f"orders: kv value at {key} is not a decimal count", False)
            count = int(text)
        count += 1
        kv.set(key, str(count).encode())
        payload = (
            f'{{"order_id":"{order_id}","customer":"{customer}","amount":{amount},'
            f'"amount_text":"{amount // 100}.{amount % 100:02d}","customer_orders":{count}}}'
        )
        out = Outgoing(key=customer, headers=[("content-type", "application/json")], payload=payload.encode())
        publish.publish(DESTINATION, out)
        return Outcome_Ack()
