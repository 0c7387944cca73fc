"""order-aggregate-py: the order aggregate of plugins/order-aggregate in Python, a Decider in
world weir:plugin/aggregate (its `world` file says so). It encodes states and events exactly
as the Rust example does (JSON, sorted keys, no spaces), so either can be deployed over the
other and the verified deploy finds their folds equal."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.decider import (
    AggregateInfo,
    Decision,
    Rejection_Invalid,
    Rejection_Refused,
)
from wit_world.imports.es_types import Command, NewEvent, RecordedEvent


def encode(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def decode_state(state: bytes) -> dict:
    try:
        v = json.loads(state)
    except ValueError as e:
        raise Err(f"bad state: {e}")
    return {
        "status": v.get("status", "new") if isinstance(v.get("status"), str) else "new",
        "total": _u64(v.get("total")),
        "paid": _u64(v.get("paid")),
        "events": _u64(v.get("events")),
    }


def _u64(x: object) -> int:
    return x if isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**64 else 0


def event(event_type: str, payload: dict) -> NewEvent:
    return NewEvent(event_type=event_type, schema_version=1, headers=[], payload=encode(payload))


def number(payload: dict, field: str) -> int:
    v = payload.get(field)
    if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64):
        raise Err(Rejection_Invalid(f"`{field}` must be a non-negative integer"))
    return v


class Decider(exports.Decider):
    def describe(self) -> AggregateInfo:
        return AggregateInfo(state_version=1)

    def initial_state(self) -> bytes:
        return encode({"status": "new", "total": 0, "paid": 0, "events": 0})

    def evolve(self, state: bytes, events: list[RecordedEvent]) -> bytes:
        s = decode_state(state)
        for e in events:
            try:
                payload = json.loads(e.payload)
            except ValueError:
                payload = None
            p = payload if isinstance(payload, dict) else {}
            t = e.event_type
            if t == "OrderPlaced":
                s["status"] = "placed"
                s["total"] = _u64(p.get("total"))
            elif t == "OrderPaid":
                s["paid"] += _u64(p.get("amount"))
            elif t == "OrderSettled":
                s["status"] = "settled"
            elif t == "OrderShipped":
                s["status"] = "shipped"
            elif t == "OrderCancelled":
                s["status"] = "cancelled"
            s["events"] += 1
        return encode(s)

    def decide(self, command: Command, state: bytes) -> Decision:
        try:
            s = decode_state(state)
        except Err as e:
            raise Err(Rejection_Invalid(str(e.value)))
        if command.payload:
            try:
                payload = json.loads(command.payload)
            except ValueError as e:
                raise Err(Rejection_Invalid(f"the payload is not JSON: {e}"))
        else:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}

        def refuse(why: str) -> Err:
            return Err(Rejection_Refused(why))

        kind = command.command_type
        if kind == "Place":
            if s["status"] != "new":
                raise refuse("the order is already placed")
            events = [event("OrderPlaced", {"total": number(payload, "total")})]
        elif kind == "Pay":
            if s["status"] != "placed":
                raise refuse("only a placed, unsettled order can be paid")
            amount = number(payload, "amount")
            if s["paid"] + amount > s["total"]:
                raise refuse("the payment exceeds what is owed")
            events = [event("OrderPaid", {"amount": amount})]
            if s["paid"] + amount == s["total"]:
                events.append(event("OrderSettled", {}))
        elif kind == "Ship":
            if s["status"] != "settled":
                raise refuse("only a settled order can be shipped")
            events = [event("OrderShipped", {})]
        elif kind == "Cancel":
            if s["status"] in ("shipped", "cancelled"):
                raise refuse("the order is already shipped or cancelled")
            events = [event("OrderCancelled", {})]
        elif kind == "Trap":
            raise RuntimeError("command `Trap` traps, as asked")
        elif kind == "Spin":
            while True:
                pass
        else:
            raise Err(Rejection_Invalid(f"unknown command `{kind}`"))
        reply = encode({"status": s["status"], "events": len(events)})
        return Decision(events=events, reply=reply)

    def is_terminal(self, state: bytes) -> bool:
        try:
            return decode_state(state)["status"] in ("shipped", "cancelled")
        except Err:
            return False
