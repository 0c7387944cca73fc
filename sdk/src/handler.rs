//! The [`handler!`](crate::handler) macro that exports a function as the plugin's handler.

/// Exports a function as this plugin's message handler.
///
/// The argument is any expression callable as
/// `Fn(`[`Message`](crate::Message)`) -> Result<`[`Outcome`](crate::Outcome)`, `[`HandlerError`](crate::HandlerError)`>`,
/// usually the name of a function. Invoke it once per plugin crate, at module level.
///
/// ```
/// use weir_sdk::{HandlerError, Message, Outcome};
///
/// fn handle(_msg: Message) -> Result<Outcome, HandlerError> {
///     Ok(Outcome::Ack)
/// }
///
/// weir_sdk::handler!(handle);
/// # fn main() {}
/// ```
///
/// The expansion contains the `unsafe` canonical-ABI entry points, so it does not compile in a
/// crate that sets `#![forbid(unsafe_code)]`.
#[macro_export]
macro_rules! handler {
    ($handler:expr $(,)?) => {
        #[doc(hidden)]
        struct __WeirHandler;

        impl $crate::bindings::exports::weir::plugin::handler::Guest for __WeirHandler {
            fn handle(
                message: $crate::Message,
            ) -> ::core::result::Result<$crate::Outcome, $crate::HandlerError> {
                ($handler)(message)
            }
        }

        $crate::bindings::__weir_export_handler!(__WeirHandler with_types_in $crate::bindings);
    };
}
