//! Snapshots of the embedded store's [`State`]: the whole state as of a journal offset, written
//! atomically so the journal before that offset can be removed.
//!
//! File `snapshot` (little-endian): magic `WEIRSNAP`, u32 format version (1), u64 journal
//! offset (the first journal record not included), u64 length of the body, the body (state
//! operations, see `state.rs`), u32 CRC-32C of everything before it.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::names::Offset;
use crate::storage::state::{self, State};

const MAGIC: &[u8; 8] = b"WEIRSNAP";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 8;

/// Writes `state` as of `journal_offset` to `dir/snapshot`: temp file, fsync, rename, fsync dir.
pub(super) fn write(dir: &Path, state: &State, journal_offset: Offset) -> std::io::Result<()> {
    let mut body = Vec::new();
    state.encode_all(&mut body);
    let mut buf = Vec::with_capacity(HEADER + body.len() + 4);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf.extend_from_slice(&journal_offset.0.to_le_bytes());
    buf.extend_from_slice(&(body.len() as u64).to_le_bytes());
    buf.extend_from_slice(&body);
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("snapshot.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&buf)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join("snapshot"))?;
    File::open(dir)?.sync_all()
}

/// Reads `dir/snapshot`: `Ok(None)` when there is none, an error naming the file when it is
/// damaged.
pub(super) fn read(dir: &Path) -> Result<Option<(State, Offset)>, String> {
    let path = dir.join("snapshot");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let bad = |why: &str| format!("damaged snapshot {}: {why}", path.display());
    if bytes.len() < HEADER + 4 || &bytes[..8] != MAGIC {
        return Err(bad("not a weir state snapshot"));
    }
    let (content, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(content).to_le_bytes() != crc {
        return Err(bad("checksum mismatch"));
    }
    let version = u32::from_le_bytes(content[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(bad(&format!(
            "format version {version}, expected {VERSION}"
        )));
    }
    let offset = Offset(u64::from_le_bytes(
        content[12..20].try_into().expect("8 bytes"),
    ));
    let len = u64::from_le_bytes(content[20..28].try_into().expect("8 bytes"));
    let body = &content[HEADER..];
    if body.len() as u64 != len {
        return Err(bad(&format!(
            "body is {} bytes, header says {len}",
            body.len()
        )));
    }
    let mut state = State::default();
    for op in state::decode(body).map_err(|e| bad(&e))? {
        state.apply(op);
    }
    Ok(Some((state, offset)))
}
