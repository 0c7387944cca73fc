//! `order-totals-v2`: `order-totals` that also counts every event by type
//! (`types/<event type>`), so its state differs from the first version's by keys only a
//! rebuild from the start of the store fills in (the tests deploy it with `--rebuild`).

/// Events are counted by type too.
const COUNT_TYPES: bool = true;

include!("../../order-totals/src/totals.rs");
