//! The in-memory id index of a log with dedup: the hash of the id of every record appended to
//! the active segment or still waiting to be written, with its offset. It lives under the pending
//! lock, so checking an id and reserving its offset is one step for concurrent appenders. When a
//! segment is sealed its ids move to its `<base>.ids` file and are pruned from here, so the map
//! holds at most about two segments' worth of ids (the bound is in `docs/storage-format.md`).

use super::hash::HashKeyed;

/// Hash of an id to the offsets of the records with an id of that hash.
#[derive(Debug, Default)]
pub(crate) struct IdMap {
    /// The first offset per hash: nearly every hash has exactly one.
    first: HashKeyed<u64>,
    /// Further offsets of hashes seen more than once (collisions, or an id appended again with
    /// a plain `append`).
    more: HashKeyed<Vec<u64>>,
    /// Entries below this offset may have been pruned: their segment is sealed and its `.ids`
    /// file is searched instead.
    pub pruned_below: u64,
}

impl IdMap {
    /// An empty map whose sealed segments end at `pruned_below`.
    pub fn new(pruned_below: u64) -> IdMap {
        IdMap {
            pruned_below,
            ..IdMap::default()
        }
    }

    /// Records that the record at `offset` has an id hashing to `hash`.
    pub fn insert(&mut self, hash: u64, offset: u64) {
        match self.first.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(offset);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.more.entry(hash).or_default().push(offset);
            }
        }
    }

    /// The offsets of the records whose id hashes to `hash`, oldest first.
    pub fn get(&self, hash: u64) -> impl Iterator<Item = u64> + '_ {
        let more = self.more.get(&hash).map(Vec::as_slice).unwrap_or_default();
        self.first
            .get(&hash)
            .copied()
            .into_iter()
            .chain(more.iter().copied())
    }

    /// Forgets the record at `offset` whose id hashes to `hash`.
    pub fn remove(&mut self, hash: u64, offset: u64) {
        if self.first.get(&hash) == Some(&offset) {
            match self.more.get_mut(&hash) {
                Some(rest) => {
                    let next = rest.remove(0);
                    if rest.is_empty() {
                        self.more.remove(&hash);
                    }
                    self.first.insert(hash, next);
                }
                None => {
                    self.first.remove(&hash);
                }
            }
        } else if let Some(rest) = self.more.get_mut(&hash) {
            rest.retain(|&o| o != offset);
            if rest.is_empty() {
                self.more.remove(&hash);
            }
        }
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.first.len() + self.more.values().map(Vec::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_with_collisions() {
        let mut m = IdMap::new(0);
        m.insert(7, 1);
        m.insert(7, 5);
        m.insert(7, 9);
        m.insert(8, 2);
        assert_eq!(m.get(7).collect::<Vec<_>>(), [1, 5, 9]);
        m.remove(7, 1);
        assert_eq!(m.get(7).collect::<Vec<_>>(), [5, 9]);
        m.remove(7, 9);
        m.remove(7, 5);
        assert_eq!(m.get(7).count(), 0);
        assert_eq!(m.len(), 1);
        m.remove(8, 3);
        assert_eq!(m.get(8).collect::<Vec<_>>(), [2]);
    }
}
