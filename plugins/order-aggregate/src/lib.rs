//! `order-aggregate`: an order as an event-sourced aggregate, in world `weir:plugin/aggregate`
//! (the Decider: `initial-state`, `evolve`, `decide`, `is-terminal`).
//!
//! Commands (JSON payloads) and the events they decide:
//! - `Place {"total": n}` → `OrderPlaced {"total": n}`; refused unless the order is new.
//! - `Pay {"amount": n}` → `OrderPaid {"amount": n}`, and `OrderSettled {}` once the paid
//!   amount reaches the total; refused unless placed, or if it would overpay.
//! - `Ship {}` → `OrderShipped {}`; refused unless settled. A shipped order is terminal.
//! - `Cancel {}` → `OrderCancelled {}`; refused once shipped or cancelled (terminal).
//!
//! The state is JSON: `{"status": "...", "total": n, "paid": n, "events": n}`, where `events`
//! counts the events folded (the tests compare it with the stream's length). For the tests,
//! command `Trap` traps and command `Spin` loops until the host's time limit stops it.

/// The state version this build declares.
const STATE_VERSION: u32 = 1;
/// What `evolve` adds to `paid` per unit paid (the variants change it).
const PAID_FACTOR: u64 = 1;
/// A field `v` in the encoded state (the variants add one).
const STATE_TAG: Option<u32> = None;

include!("decider.rs");
