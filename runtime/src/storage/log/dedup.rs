//! Publish dedup: [`super::Log::append_dedup`] stores a record only if no record with the same
//! id is stored (anywhere in the log, or waiting to be written), and otherwise answers with the
//! original's offset. Ids are found by their hash: in the `<base>.ids` file of each sealed
//! segment, and in the in-memory [`super::idmap::IdMap`] for the active segment and unwritten
//! records; every hash hit is confirmed by reading the record and comparing the whole id.
//!
//! **Invariant:** checking the in-memory ids and reserving offsets for the new ones happen under
//! the pending lock in one step, so two concurrent appends of one new id store it once.

use std::collections::{HashMap, HashSet};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::Log;
use super::error::LogError;
use super::frame;
use super::read::frame_at;
use super::shared::Shared;
use super::ticket::{AppendFuture, AppendTicket, Appended};
use crate::names::Offset;
use crate::storage::Record;

/// Where one record of an `append_dedup` call is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deduped {
    /// The record's offset: the original one if it was a duplicate.
    pub offset: Offset,
    /// Whether a record with this id was already stored (or came earlier in the same call), so
    /// nothing new was stored for it.
    pub duplicate: bool,
}

/// The pending result of [`Log::append_dedup`]: one [`Deduped`] per input record, in order.
#[must_use = "an append is acknowledged only when its ticket says so"]
#[derive(Debug)]
pub struct DedupTicket {
    ticket: Option<AppendTicket>,
    outcome: Result<Vec<Deduped>, LogError>,
}

impl DedupTicket {
    fn failed(e: LogError) -> DedupTicket {
        DedupTicket {
            ticket: None,
            outcome: Err(e),
        }
    }

    /// Where each record went, known before the new records are acknowledged (`None` if the
    /// append was refused).
    pub fn outcome(&self) -> Option<&[Deduped]> {
        self.outcome.as_deref().ok()
    }

    /// The outcome and the ticket of the new records (none if nothing new was appended), for
    /// callers that wait on several appends together.
    pub fn into_parts(self) -> (Result<Vec<Deduped>, LogError>, Option<AppendTicket>) {
        (self.outcome, self.ticket)
    }

    /// Blocks until the new records are acknowledged (duplicates' originals already are).
    pub fn wait(self) -> Result<Vec<Deduped>, LogError> {
        if let Some(t) = self.ticket {
            t.wait()?;
        }
        self.outcome
    }
}

/// The future of a [`DedupTicket`] (`ticket.await`).
#[derive(Debug)]
pub struct DedupFuture {
    ticket: Option<AppendFuture>,
    outcome: Option<Result<Vec<Deduped>, LogError>>,
}

impl Future for DedupFuture {
    type Output = Result<Vec<Deduped>, LogError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(t) = self.ticket.as_mut() {
            match Pin::new(t).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(_)) => self.ticket = None,
            }
        }
        Poll::Ready(self.outcome.take().unwrap_or(Err(LogError::Closed)))
    }
}

impl IntoFuture for DedupTicket {
    type Output = Result<Vec<Deduped>, LogError>;
    type IntoFuture = DedupFuture;

    fn into_future(self) -> DedupFuture {
        DedupFuture {
            ticket: self.ticket.map(IntoFuture::into_future),
            outcome: Some(self.outcome),
        }
    }
}

impl Log {
    /// Appends the records whose id is not stored yet and returns, for every input record, its
    /// offset and whether it was a duplicate: a record whose id is already in the log (within
    /// retention and compaction), waiting to be written, or earlier in `records` is not stored
    /// again and gets the original's offset. The new records get consecutive offsets in input
    /// order. Fails with [`LogError::DedupOff`] on a log opened without dedup.
    ///
    /// Like [`Log::append`] it blocks for backpressure; it also blocks while a record with the
    /// same id hash is still unacknowledged, until it is (to compare the ids).
    pub fn append_dedup(&self, records: &[Record]) -> DedupTicket {
        let shared = &self.shared;
        if !shared.opts.dedup {
            return DedupTicket::failed(LogError::DedupOff);
        }
        let mut lens = Vec::with_capacity(records.len());
        for r in records {
            match frame::encoded_len(r) {
                Ok(len) => lens.push(len),
                Err(e) => return DedupTicket::failed(e),
            }
        }
        // The first occurrence of each id in the call; later ones are duplicates of it.
        let mut unique_of: HashMap<&str, usize> = HashMap::new();
        let mut uniques = Vec::new();
        let which: Vec<usize> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                *unique_of.entry(r.id.as_str()).or_insert_with(|| {
                    uniques.push(i);
                    uniques.len() - 1
                })
            })
            .collect();
        let both: Vec<[u64; 2]> = uniques
            .iter()
            .map(|&i| shared.hashes(&records[i]))
            .collect();
        let hashes: Vec<u64> = both.iter().map(|h| h[0]).collect();
        let mut found: Vec<Option<u64>> = vec![None; uniques.len()];
        let mut mismatched = HashSet::new();
        let mut checked_to = 0;
        let (first, new) = loop {
            let id = |u: usize| records[uniques[u]].id.as_str();
            match shared.find_sealed(&hashes, &mut found, id, checked_to) {
                Ok(to) => checked_to = to,
                Err(e) => return DedupTicket::failed(e),
            }
            let new: Vec<usize> = (0..uniques.len()).filter(|&u| found[u].is_none()).collect();
            let bytes = new.iter().map(|&u| lens[uniques[u]]).sum();
            let mut p = match shared.lock_for_append(bytes, new.len()) {
                Ok(p) => p,
                Err(e) => return DedupTicket::failed(e),
            };
            let Some(ids) = p.ids.as_ref() else {
                return DedupTicket::failed(LogError::DedupOff);
            };
            if ids.pruned_below > checked_to {
                continue;
            }
            let to_confirm: Vec<(usize, u64)> = new
                .iter()
                .filter_map(|&u| {
                    ids.get(hashes[u])
                        .find(|&o| !mismatched.contains(&(u, o)))
                        .map(|o| (u, o))
                })
                .collect();
            if to_confirm.is_empty() {
                let new_records = new.iter().map(|&u| &records[uniques[u]]);
                let new_hashes: Vec<[u64; 2]> = new.iter().map(|&u| both[u]).collect();
                let (first, was_empty) = shared.push(&mut p, new_records, bytes, &new_hashes);
                drop(p);
                if was_empty && !new.is_empty() {
                    shared.writer_cv.notify_one();
                }
                break (first, new);
            }
            drop(p);
            for (u, offset) in to_confirm {
                match self.is_stored_at(offset, id(u)) {
                    Ok(true) => found[u] = Some(offset),
                    Ok(false) => {
                        mismatched.insert((u, offset));
                    }
                    Err(e) => return DedupTicket::failed(e),
                }
            }
        };
        let mut offset_of = found;
        for (rank, &u) in new.iter().enumerate() {
            offset_of[u] = Some(first + rank as u64);
        }
        let new_set: HashSet<usize> = new.iter().map(|&u| uniques[u]).collect();
        let outcome = which
            .iter()
            .enumerate()
            .map(|(i, &u)| Deduped {
                offset: Offset(offset_of[u].unwrap_or_default()),
                duplicate: !new_set.contains(&i),
            })
            .collect();
        let ticket = (!new.is_empty()).then(|| {
            AppendTicket::waiting(
                shared.clone(),
                Appended {
                    first: Offset(first),
                    count: new.len() as u64,
                },
            )
        });
        DedupTicket {
            ticket,
            outcome: Ok(outcome),
        }
    }

    /// Whether the record at `offset` (waiting for its acknowledgement first) has id `id`.
    fn is_stored_at(&self, offset: u64, id: &str) -> Result<bool, LogError> {
        let one = Appended {
            first: Offset(offset),
            count: 1,
        };
        AppendTicket::waiting(self.shared.clone(), one).wait()?;
        match self.shared.read(Offset(offset), 1, 1) {
            Ok(entries) => Ok(entries
                .first()
                .is_some_and(|e| e.offset.0 == offset && e.record.id == id)),
            Err(LogError::Removed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Log {
    /// The offset of the stored record with `id`, if any: the in-memory ids (active segment and
    /// records waiting to be written) first, then the sealed segments' id indexes. Waits for a
    /// candidate record to be acknowledged before reading it. Fails with
    /// [`LogError::DedupOff`] on a log opened without dedup.
    pub fn find_id(&self, id: &str) -> Result<Option<Offset>, LogError> {
        let shared = &self.shared;
        if !shared.opts.dedup {
            return Err(LogError::DedupOff);
        }
        let hash = shared.opts.hash(id.as_bytes());
        let candidates: Vec<u64> = {
            let p = super::shared::lock(&shared.pending);
            match p.ids.as_ref() {
                Some(ids) => ids.get(hash).collect(),
                None => return Err(LogError::DedupOff),
            }
        };
        for offset in candidates {
            if self.is_stored_at(offset, id)? {
                return Ok(Some(Offset(offset)));
            }
        }
        let mut found = [None];
        shared.find_sealed(&[hash], &mut found, |_| id, 0)?;
        Ok(found[0].map(Offset))
    }
}

impl Shared {
    /// Looks the ids not `found` yet up in the sealed segments starting at or after `from`,
    /// oldest first; returns the end of the sealed segments searched.
    fn find_sealed<'a>(
        &self,
        hashes: &[u64],
        found: &mut [Option<u64>],
        id: impl Fn(usize) -> &'a str,
        from: u64,
    ) -> Result<u64, LogError> {
        let (sealed, to) = {
            let s = self.read_segments();
            let sealed: Vec<_> = s
                .sealed
                .iter()
                .filter(|x| x.summary.end > from)
                .cloned()
                .collect();
            (sealed, s.active.index.summary.base)
        };
        for seg in &sealed {
            let Some(ids) = &seg.ids else { continue };
            for (u, &hash) in hashes.iter().enumerate() {
                if found[u].is_some() {
                    continue;
                }
                let hits = ids.lookup(hash).map_err(|e| LogError::io(ids.path(), e))?;
                for hit in hits {
                    let f = frame_at(&*seg.file, &seg.path, hit.position.into(), seg.summary.len)?;
                    let offset = seg.summary.base + u64::from(hit.relative_offset);
                    if f.offset.0 == offset && f.record.id == id(u) {
                        found[u] = Some(offset);
                        break;
                    }
                }
            }
        }
        Ok(to)
    }
}
