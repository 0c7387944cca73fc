//! What a program outside the hosts may read of a cluster's progress (`weir bench e2e
//! --broker nats` follows the commit records to see when events are durably handled): where
//! a binding partition's commit record lives, the cursor it holds, and the partition a record
//! without a key goes to.

use super::{layout, partition::CommitRecord};
use crate::names::{BindingName, Offset};
use crate::storage::{Record, StorageError};

/// The key-value bucket of the commit records.
pub const COMMITS_BUCKET: &str = layout::COMMITS;

/// The key-value bucket of the partition leases: one key per binding partition, its value the
/// id of the host holding it.
pub const LEASES_BUCKET: &str = layout::LEASES;

/// The key of partition `p`'s commit record of `binding` in [`COMMITS_BUCKET`].
pub fn commit_key(binding: &BindingName, p: u32) -> String {
    layout::commit_key(binding, p)
}

/// The cursor a commit record holds: every offset of its partition below it is handled
/// durably.
pub fn commit_cursor(bytes: &[u8]) -> Result<Offset, StorageError> {
    CommitRecord::decode(bytes).map(|r| r.cursor)
}

/// The partition (of `partitions`) a record with id `id` and no key goes to.
pub fn partition_of_id(id: &str, partitions: u32) -> u32 {
    let record = Record {
        id: id.into(),
        key: None,
        headers: Vec::new(),
        payload: Vec::new(),
        timestamp_ms: 0,
        reply_to: None,
        correlation_id: None,
    };
    layout::partition_of(&record, partitions)
}
