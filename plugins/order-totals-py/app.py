"""order-totals-py: the order-totals projection of plugins/order-totals in Python, in world
weir:plugin/projection (its `world` file says so). It keeps exactly the key-value state the
Rust example keeps (decimal counters as text, `order/<stream>` statuses), so either can
replace the other with `weir plugin deploy --rebuild` and the read model reads the same."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import kv
from wit_world.imports.es_types import RecordedEvent
from wit_world.imports.types import HandlerError

U64 = 2**64


def fail(message: str, retryable: bool) -> Err:
    return Err(HandlerError(message=message, retryable=retryable))


def kv_failed(error: object) -> Err:
    if isinstance(error, kv.KvError_Unavailable):
        return fail(f"kv: {error.value}", True)
    if isinstance(error, kv.KvError_TooLarge):
        return fail(f"kv: over the host's limit of {error.value} bytes", False)
    return fail(f"kv: refused by the host: {error}", False)


def get(key: str) -> bytes | None:
    try:
        return kv.get(key)
    except Err as e:
        raise kv_failed(e.value)


def put(key: str, value: bytes) -> None:
    try:
        kv.set(key, value)
    except Err as e:
        raise kv_failed(e.value)


def read(key: str) -> int:
    """The decimal counter at `key` (0 when absent)."""
    stored = get(key)
    if stored is None:
        return 0
    text = stored.decode("ascii", "replace")
    if not (text.isdigit() and text.isascii() and int(text) < U64):
        raise fail(f"kv key `{key}` does not hold a decimal number", False)
    return int(text)


def add(key: str, n: int) -> None:
    value = read(key) + n
    if value >= U64:
        raise fail(f"kv key `{key}` would overflow", False)
    put(key, str(value).encode())


def status(stream: str, to: str) -> None:
    put(f"order/{stream}", to.encode())


def number(event: RecordedEvent, field: str) -> int:
    """The unsigned number at `field` of the event's JSON payload."""
    where = f"{event.event_type} at {event.stream_name}@{event.revision}"
    try:
        payload = json.loads(event.payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise fail(f"{where}: payload is not JSON: {e}", False)
    v = payload.get(field) if isinstance(payload, dict) else None
    if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < U64):
        raise fail(f"{where}: `{field}` is not an unsigned number", False)
    return v


class Projector(exports.Projector):
    def project(self, event: RecordedEvent) -> None:
        stream = event.stream_name
        t = event.event_type
        if t == "OrderPlaced":
            total = number(event, "total")
            add("orders/placed", 1)
            add("amount/ordered", total)
            status(stream, "placed")
        elif t == "OrderPaid":
            add("amount/paid", number(event, "amount"))
        elif t == "OrderSettled":
            add("orders/settled", 1)
            status(stream, "settled")
        elif t == "OrderShipped":
            add("orders/shipped", 1)
            status(stream, "shipped")
        elif t == "OrderCancelled":
            add("orders/cancelled", 1)
            status(stream, "cancelled")
        add("events", 1)
        put("position", str(event.position).encode())
