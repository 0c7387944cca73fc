//! Host bindings generated from `wit/` by wasmtime's `bindgen!`. Generated code stays in this
//! file; the `Host` trait impls live next to the state they touch (`state.rs`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "message-handler",
});

pub(crate) use self::weir::plugin::types::{HandlerError, Message, Outcome, Outgoing};

/// Host bindings of world `projection`: its imports are the handler world's (same traits, same
/// impls), its export the `projector` interface.
pub(crate) mod projection {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "projection",
        with: {
            "weir:plugin/types": super::weir::plugin::types,
            "weir:plugin/log": super::weir::plugin::log,
            "weir:plugin/publish": super::weir::plugin::publish,
            "weir:plugin/kv": super::weir::plugin::kv,
            "weir:plugin/clock": super::weir::plugin::clock,
        },
    });

    /// `es-types` declares only types: nothing to implement.
    impl weir::plugin::es_types::Host for crate::host::state::HostState {}
}

/// What a plugin component exports, ready to instantiate: a message handler or a projection.
#[derive(Clone)]
pub(crate) enum Pre {
    /// World `message-handler`.
    Handler(MessageHandlerPre<crate::host::state::HostState>),
    /// World `projection`.
    Projection(projection::ProjectionPre<crate::host::state::HostState>),
}

impl Pre {
    /// The component's pre-instance.
    pub fn instance_pre(&self) -> &wasmtime::component::InstancePre<crate::host::state::HostState> {
        match self {
            Pre::Handler(p) => p.instance_pre(),
            Pre::Projection(p) => p.instance_pre(),
        }
    }
}

/// The exports of one instance.
pub(crate) enum Exports {
    /// World `message-handler`.
    Handler(MessageHandler),
    /// World `projection`.
    Projection(projection::Projection),
}
