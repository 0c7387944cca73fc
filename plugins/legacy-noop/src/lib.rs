//! `legacy-noop`: a handler built against `weir:plugin@0.1.0` (the package as it first shipped,
//! kept verbatim in `wit/`), so the tests prove that a host serving a later minor version
//! still loads and runs plugins built for an earlier one. It acknowledges every message and
//! logs once, so it really imports `log@0.1.0`.

mod bindings {
    //! Bindings for `weir:plugin/message-handler@0.1.0`.
    #![allow(missing_docs, unsafe_code, unused_qualifications, clippy::all)]

    wit_bindgen::generate!({
        path: "wit",
        world: "weir:plugin/message-handler@0.1.0",
        generate_all,
    });
}

use bindings::exports::weir::plugin::handler::{Guest, HandlerError, Message, Outcome};
use bindings::weir::plugin::log::{Level, log};

struct LegacyNoop;

impl Guest for LegacyNoop {
    fn handle(msg: Message) -> Result<Outcome, HandlerError> {
        log(Level::Debug, &format!("legacy-noop: {}", msg.id));
        Ok(Outcome::Reply(b"legacy".to_vec()))
    }
}

bindings::export!(LegacyNoop with_types_in bindings);
