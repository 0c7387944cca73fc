//! `order-aggregate-drift`: `order-aggregate` with a bug in `evolve` (a payment counts twice)
//! and the same state version, so a verified deploy over `order-aggregate` must be refused.

/// The state version: the same as `order-aggregate`'s.
const STATE_VERSION: u32 = 1;
/// The bug: every unit paid counts twice.
const PAID_FACTOR: u64 = 2;
/// No extra field.
const STATE_TAG: Option<u32> = None;

include!("../../order-aggregate/src/decider.rs");
