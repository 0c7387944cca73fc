//! Feeds arbitrary bytes to `decode_frame`: it must return a frame or an error, never panic,
//! never loop, and never allocate more than the input holds.
//!
//! The CRC-32C is checked before any field is parsed, so random bytes almost never get past
//! it. Each input is therefore decoded twice: as it is, and with the checksum (bytes 0..4)
//! recomputed over the body its length field claims (or what the input holds of it), which
//! sends the fuzzer into the field parser.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::storage::log::decode_frame;

/// Bytes of crc (4) and body length (4) before the body.
const FRAME_HEADER: usize = 8;
/// The smallest frame the format allows.
const MIN_FRAME: usize = 33;

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= FRAME_HEADER {
        let mut fixed = data.to_vec();
        let body_len = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
        let end = FRAME_HEADER.saturating_add(body_len).min(fixed.len());
        let crc = crc32c::crc32c(&fixed[4..end]);
        fixed[..4].copy_from_slice(&crc.to_le_bytes());
        check(&fixed);
    }
});

fn check(bytes: &[u8]) {
    let Ok((frame, len)) = decode_frame(bytes) else {
        return;
    };
    assert!(
        (MIN_FRAME..=bytes.len()).contains(&len),
        "frame length {len} outside {MIN_FRAME}..={}",
        bytes.len()
    );
    let r = &frame.record;
    let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let decoded = r.id.len()
        + optional(&r.key)
        + optional(&r.reply_to)
        + optional(&r.correlation_id)
        + r.headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>()
        + r.payload.len();
    assert!(
        decoded <= len,
        "decoded {decoded} bytes of fields from a {len}-byte frame"
    );
}
