//! The raw bindings `wit-bindgen` generates from `wit/` (world `weir:plugin/message-handler`).
//!
//! Handler authors should not need this module: the crate root re-exports the types and wraps
//! the imports. It is public only because the [`handler!`](crate::handler) macro expands, in the
//! author's crate, to export glue that refers back to it.
//!
//! On `wasm32` the imports call into the host. On any other target `wit-bindgen` compiles them
//! to stubs that panic when called, so plugins and this crate still type-check, lint and run
//! doctests natively.

wit_bindgen::generate!({
    path: "../wit",
    world: "weir:plugin/message-handler",
    // The export macro must be usable from the handler author's crate.
    pub_export_macro: true,
    export_macro_name: "__weir_export_handler",
    default_bindings_module: "weir_sdk::bindings",
});
