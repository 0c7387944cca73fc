//! Metrics in the Prometheus text format (`GET /metrics`): the [`Registry`] of counters and
//! histograms other modules register, the process-wide storage histograms ([`STORAGE`]), and
//! the text [`Encoder`] the server renders its own counters with at scrape time.
//!
//! Hot paths hold an `Arc<Counter>` or a [`Histogram`] (or index a fixed table of their own,
//! registered as a [`Collect`]) and only do relaxed atomic adds: no lock, no map lookup. The
//! registry's lock is taken when something registers (startup, a plugin swap) and when
//! `/metrics` is scraped.
//!
//! Adding a counter from another module (a plugin swap, say):
//!
//! ```
//! # let registry = weir::metrics::Registry::default();
//! let swaps = registry.counter(
//!     "weir_plugin_swaps_total",
//!     "Plugin versions swapped in.",
//!     &[("plugin", "enrich")],
//! );
//! swaps.inc();
//! assert!(registry.render_text().contains("weir_plugin_swaps_total{plugin=\"enrich\"} 1"));
//! ```

mod histogram;
mod text;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub use histogram::{BOUNDS_NS, Histogram, HistogramSnapshot, LocalHistogram};
pub use text::Encoder;

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Histograms of the storage engine, for every log of the process: written to by the log's
/// writer and sync threads, read at scrape time.
#[derive(Debug)]
pub struct StorageMetrics {
    /// From an external publish's append call to its acknowledgement (durable, with
    /// `fsync = "always"`).
    pub append: Histogram,
    /// One group-commit batch's positional write.
    pub write: Histogram,
    /// One `fdatasync`.
    pub fsync: Histogram,
}

/// The storage histograms of this process.
pub static STORAGE: StorageMetrics = StorageMetrics {
    append: Histogram::new(),
    write: Histogram::new(),
    fsync: Histogram::new(),
};

/// The label value that names a plugin version in metrics and traces: the first 12 hex digits
/// of the component's SHA-256. The one place to change what a "version" is called.
pub fn plugin_version(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// Something that adds its own samples at scrape time: a fixed table of counters a hot path
/// indexes without a lock, say (the API's request counts).
pub trait Collect: Send + Sync {
    /// Adds the current samples to `enc`.
    fn encode(&self, enc: &mut Encoder);
}

enum Metric {
    Counter(Arc<Counter>),
    Histogram(Arc<Histogram>),
    Collector(Arc<dyn Collect>),
}

struct Registered {
    name: &'static str,
    help: &'static str,
    labels: Vec<(String, String)>,
    metric: Metric,
}

/// Counters and histograms registered by name and labels; rendered on every scrape.
#[derive(Default)]
pub struct Registry {
    metrics: Mutex<Vec<Registered>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// The counter `name` with these labels, registered on first use (the same one after).
    /// `name` should end in `_total`.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Arc<Counter> {
        let mut metrics = self.lock();
        if let Some(Metric::Counter(c)) = find(&metrics, name, labels) {
            return Arc::clone(c);
        }
        let c = Arc::new(Counter::default());
        metrics.push(registered(
            name,
            help,
            labels,
            Metric::Counter(Arc::clone(&c)),
        ));
        c
    }

    /// The histogram `name` (of durations, in seconds) with these labels, registered on first
    /// use. `name` should end in `_seconds`.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
    ) -> Arc<Histogram> {
        let mut metrics = self.lock();
        if let Some(Metric::Histogram(h)) = find(&metrics, name, labels) {
            return Arc::clone(h);
        }
        let h = Arc::new(Histogram::new());
        metrics.push(registered(
            name,
            help,
            labels,
            Metric::Histogram(Arc::clone(&h)),
        ));
        h
    }

    /// Registers `collector` as what renders the family `name` (its help text too), in
    /// place of one registered under that name before.
    pub fn collector(&self, name: &'static str, collector: Arc<dyn Collect>) {
        let mut metrics = self.lock();
        metrics.retain(|m| !(m.name == name && matches!(m.metric, Metric::Collector(_))));
        metrics.push(registered(name, "", &[], Metric::Collector(collector)));
    }

    /// Adds every registered metric to `enc`.
    pub fn encode(&self, enc: &mut Encoder) {
        for m in self.lock().iter() {
            let labels: Vec<(&str, &str)> = m
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match &m.metric {
                Metric::Counter(c) => enc.counter(m.name, m.help, &labels, c.get()),
                Metric::Histogram(h) => enc.histogram(m.name, m.help, &labels, &h.snapshot()),
                Metric::Collector(c) => c.encode(enc),
            }
        }
    }

    /// The registered metrics alone, as Prometheus text.
    pub fn render_text(&self) -> String {
        let mut enc = Encoder::default();
        self.encode(&mut enc);
        enc.finish()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Registered>> {
        self.metrics.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn find<'m>(metrics: &'m [Registered], name: &str, labels: &[(&str, &str)]) -> Option<&'m Metric> {
    metrics
        .iter()
        .find(|m| {
            m.name == name
                && m.labels.len() == labels.len()
                && m.labels
                    .iter()
                    .zip(labels)
                    .all(|(a, b)| a.0 == b.0 && a.1 == b.1)
        })
        .map(|m| &m.metric)
}

fn registered(
    name: &'static str,
    help: &'static str,
    labels: &[(&str, &str)],
    metric: Metric,
) -> Registered {
    Registered {
        name,
        help,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        metric,
    }
}

/// Adds the storage histograms of this process to `enc`.
pub fn encode_storage(enc: &mut Encoder) {
    enc.histogram(
        "weir_storage_append_seconds",
        "Time from an external publish's append to its acknowledgement.",
        &[],
        &STORAGE.append.snapshot(),
    );
    enc.histogram(
        "weir_storage_write_seconds",
        "Time of one group-commit batch write.",
        &[],
        &STORAGE.write.snapshot(),
    );
    enc.histogram(
        "weir_storage_fsync_seconds",
        "Time of one fdatasync of a log segment.",
        &[],
        &STORAGE.fsync.snapshot(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_registered_once_per_name_and_labels() {
        let r = Registry::default();
        let a = r.counter("x_total", "X.", &[("plugin", "a")]);
        let again = r.counter("x_total", "X.", &[("plugin", "a")]);
        let b = r.counter("x_total", "X.", &[("plugin", "b")]);
        a.inc();
        again.inc();
        b.add(5);
        let text = r.render_text();
        assert_eq!(
            text,
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{plugin=\"a\"} 2\nx_total{plugin=\"b\"} 5\n"
        );
    }
}
