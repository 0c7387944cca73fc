//! `order-totals`: a read model of the `order-aggregate` example's events, in world
//! `weir:plugin/projection`. Bind it to the orders stream store; under exactly-once its
//! key-value writes commit with its checkpoint, so every event counts once.
//!
//! Key-value state, all values decimal text:
//! - `events`: events projected; `position`: the store position of the last one.
//! - `orders/placed`, `orders/settled`, `orders/shipped`, `orders/cancelled`: order counts.
//! - `amount/ordered`: the sum of `OrderPlaced.total`; `amount/paid`: of `OrderPaid.amount`.
//! - `order/<stream>`: the order's status (`placed`, `settled`, `shipped`, `cancelled`).
//!
//! An event type it does not know is counted in `events` and otherwise ignored, so a newer
//! aggregate can add events without stopping the projection. A known event whose payload is
//! not the JSON it expects fails that event (non-retryable: it goes to the dead-letter queue
//! with the reason instead of being counted wrong).

/// Whether every event is also counted by type (`types/<event type>`): off here, on in the
/// `order-totals-v2` test variant (a new version whose state only a rebuild makes whole).
const COUNT_TYPES: bool = false;

include!("totals.rs");
