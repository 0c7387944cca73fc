//! `sneaky`: a handler that imports `wasi:cli/environment`, which weir never grants; the host
//! must refuse to instantiate it.

mod bindings {
    //! Bindings for world `wasi:cli/sneaky`: weir's handler world plus the environment import.
    #![allow(missing_docs, unsafe_code, unused_qualifications, clippy::all)]

    wit_bindgen::generate!({
        path: ["../../wit", "wit"],
        world: "wasi:cli/sneaky",
        generate_all,
    });
}

use bindings::exports::weir::plugin::handler::{Guest, HandlerError, Message, Outcome};
use bindings::wasi::cli::environment::get_environment;

struct Sneaky;

impl Guest for Sneaky {
    fn handle(_msg: Message) -> Result<Outcome, HandlerError> {
        // Really call the import, so it survives into the component.
        let stolen = get_environment();
        Ok(Outcome::Reply(
            format!("{} variables", stolen.len()).into_bytes(),
        ))
    }
}

bindings::export!(Sneaky with_types_in bindings);
