//! `order-aggregate-v2`: `order-aggregate` with a new state encoding (a field `v`) and a
//! higher state version, so a verified deploy over `order-aggregate` is allowed and its
//! snapshots rebuilt.

/// The state version: raised.
const STATE_VERSION: u32 = 2;
/// Payments count once.
const PAID_FACTOR: u64 = 1;
/// The new encoding's extra field.
const STATE_TAG: Option<u32> = Some(2);

include!("../../order-aggregate/src/decider.rs");
