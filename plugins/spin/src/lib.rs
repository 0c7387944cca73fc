//! `spin`: never returns; exercises weir's per-invocation time limit (epoch deadline / fuel).

use weir_sdk::{HandlerError, Message, Outcome, clock};

fn handle(_msg: Message) -> Result<Outcome, HandlerError> {
    let mut last = 0;
    loop {
        // A host call per iteration: the loop has an observable effect and cannot be removed.
        last = std::hint::black_box(clock::monotonic_ns().wrapping_add(last));
    }
}

weir_sdk::handler!(handle);
