//! `tagger`: publishes every message's payload to the queue `out` (same key) with the plugin's
//! version tag in front: `<tag>|<payload>`. The tag is the 8 bytes after `weir-tag:` in the
//! component's data, so `weir bench swap` makes any number of distinguishable versions of one
//! build by rewriting those bytes.

use weir_sdk::{HandlerError, Message, Outcome, Outgoing};

/// The marker and the tag, kept in the component's data section as one piece.
#[used]
static TAG: [u8; 17] = *b"weir-tag:00000000";

fn tag() -> [u8; 8] {
    // Read through an opaque reference: the compiler cannot fold the bytes into the code, so
    // the tag lives (and is rewritten) in the data section only.
    let all: [u8; 17] = *std::hint::black_box(&TAG);
    let mut t = [0; 8];
    t.copy_from_slice(&all[9..]);
    t
}

fn handle(msg: Message) -> Result<Outcome, HandlerError> {
    let mut payload = Vec::with_capacity(9 + msg.payload.len());
    payload.extend_from_slice(&tag());
    payload.push(b'|');
    payload.extend_from_slice(&msg.payload);
    let out = Outgoing {
        key: msg.key.clone(),
        headers: Vec::new(),
        payload,
    };
    weir_sdk::publish("out", out)?;
    Ok(Outcome::Ack)
}

weir_sdk::handler!(handle);
