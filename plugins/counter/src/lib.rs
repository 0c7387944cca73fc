//! `counter`: counts messages in kv under `count` and, for keyed messages, `count/<key>`
//! (u64 little-endian); replies with the total as decimal text when header `reply` is present;
//! when header `forward-to` is present, also publishes the payload (with the key, and the new
//! total in header `count`) there, so every counted message leaves one output carrying its
//! identity and the state it saw (`weir chaos --scenario deliver` checks the counter and the
//! outputs against the inputs). Header `forward-copies: N` (1 to 16) makes it N outputs, each
//! with header `copy` (0 to N-1).

use weir_sdk::{HandlerError, Message, Outcome, Outgoing, kv};

/// Adds one to the u64 little-endian counter stored at `key` and returns the new value.
fn increment(key: &str) -> Result<u64, HandlerError> {
    let count = match kv::get(key)? {
        None => 0,
        Some(bytes) => {
            let bytes = <[u8; 8]>::try_from(bytes.as_slice()).map_err(|_| {
                HandlerError::fatal(format!(
                    "counter expected 8 bytes at kv key `{key}`, found {}",
                    bytes.len()
                ))
            })?;
            u64::from_le_bytes(bytes)
        }
    };
    let count = count + 1;
    kv::set(key, count.to_le_bytes())?;
    Ok(count)
}

fn handle(msg: Message) -> Result<Outcome, HandlerError> {
    let total = increment("count")?;
    if let Some(key) = &msg.key {
        increment(&format!("count/{key}"))?;
    }
    if let Some(destination) = msg.header("forward-to") {
        let copies = match msg.header("forward-copies") {
            None => 1,
            Some(n) => n
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=16).contains(n))
                .ok_or_else(|| {
                    HandlerError::fatal(format!("forward-copies must be 1 to 16, found `{n}`"))
                })?,
        };
        for copy in 0..copies {
            let mut headers = vec![("count".to_owned(), total.to_string())];
            if msg.header("forward-copies").is_some() {
                headers.push(("copy".to_owned(), copy.to_string()));
            }
            let out = Outgoing {
                key: msg.key.clone(),
                headers,
                payload: msg.payload.clone(),
            };
            weir_sdk::publish(destination, out)?;
        }
    }
    if msg.has_header("reply") {
        return Ok(Outcome::Reply(total.to_string().into_bytes()));
    }
    Ok(Outcome::Ack)
}

weir_sdk::handler!(handle);
