//! What `GET /metrics` shows: the server's counters rendered at scrape time (destinations,
//! bindings, plugins), the storage histograms, and whatever other modules registered in
//! [`Runtime::metrics`](super::Runtime).

use crate::delivery::FAILURE_CLASSES as CLASSES;
use crate::metrics::{Encoder, encode_storage};
use crate::names::DestinationName;

use super::{Runtime, backpressure};

impl Runtime {
    /// Every metric, in the Prometheus text exposition format.
    pub fn render_metrics(&self) -> String {
        let mut enc = Encoder::default();
        enc.gauge(
            "weir_build_info",
            "The weir build serving (always 1).",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        self.encode_destinations(&mut enc);
        self.encode_bindings(&mut enc);
        self.encode_plugins(&mut enc);
        enc.gauge(
            "weir_requests_waiting",
            "Requests waiting for a reply.",
            &[],
            self.inbox.waiting() as f64,
        );
        encode_storage(&mut enc);
        enc.counter(
            "weir_log_fsyncs_total",
            "fdatasync calls made by the store's logs and journal.",
            &[],
            crate::storage::log::FSYNCS.load(std::sync::atomic::Ordering::Relaxed),
        );
        self.metrics.encode(&mut enc);
        enc.finish()
    }

    fn end(&self, d: &DestinationName) -> u64 {
        self.storage
            .watch_end(d)
            .map(|w| w.borrow().0)
            .unwrap_or_default()
    }

    /// Per plugin: the active version, swaps and rollbacks; per stored version, invocations
    /// and failures since the server started.
    fn encode_plugins(&self, enc: &mut Encoder) {
        for p in self.plugins.list() {
            let plugin = [("plugin", p.name.as_str())];
            for v in &p.versions {
                let version = v.version.to_string();
                let labels = [("plugin", p.name.as_str()), ("version", version.as_str())];
                if v.version == p.active {
                    let mut l = labels.to_vec();
                    l.push(("sha256", &v.sha256));
                    enc.gauge(
                        "weir_plugin_info",
                        "The active version of a plugin (always 1); `version` is the label other metrics use.",
                        &l,
                        1.0,
                    );
                }
                enc.counter(
                    "weir_plugin_version_invocations_total",
                    "Invocations of a plugin version since the server started.",
                    &labels,
                    v.invocations,
                );
                enc.counter(
                    "weir_plugin_version_failures_total",
                    "Failed invocations of a plugin version since the server started.",
                    &labels,
                    v.failures,
                );
            }
            enc.counter(
                "weir_plugin_swaps_total",
                "Versions swapped in since the server started (deploys and rollbacks).",
                &plugin,
                p.swaps,
            );
            enc.counter(
                "weir_plugin_rollbacks_total",
                "Rollbacks since the server started (by command and automatic).",
                &plugin,
                p.rollbacks,
            );
            enc.gauge(
                "weir_plugin_refused_deploys",
                "Refused deploys remembered (the latest 8).",
                &plugin,
                p.refusals.len() as f64,
            );
        }
    }

    fn encode_destinations(&self, enc: &mut Encoder) {
        for (name, kind) in &self.config.destinations {
            let kind = kind.as_str();
            let labels = [("destination", name.as_str()), ("kind", kind)];
            enc.counter(
                "weir_destination_messages_total",
                "Messages stored in a queue or topic, ever (its end offset); rate() is the publish rate.",
                &labels,
                self.end(name),
            );
            let consumers = backpressure::consumers(&self.config, name);
            let depth = backpressure::depth(&*self.storage, name, &consumers);
            enc.gauge(
                "weir_destination_depth",
                "Messages not yet acknowledged by the slowest binding consuming the destination.",
                &labels,
                depth as f64,
            );
            let (_, bytes) = self.storage.usage(name).unwrap_or_default();
            enc.gauge(
                "weir_destination_bytes",
                "Bytes the destination's log takes on disk.",
                &labels,
                bytes as f64,
            );
        }
    }

    fn encode_bindings(&self, enc: &mut Encoder) {
        for b in &self.config.bindings {
            let stats = &self.bindings[&b.name];
            // No `version` label: a binding's series stay the same across deploys
            // (`weir_plugin_version_*` count per version, `weir_plugin_info` names the active).
            let labels = [("binding", b.name.as_str()), ("plugin", b.plugin.as_str())];
            let s = stats.snapshot();
            let cursor = self.storage.cursor(&b.name).0;
            enc.gauge(
                "weir_binding_lag",
                "Messages of the binding's source it has not acknowledged yet.",
                &[("binding", b.name.as_str()), ("source", b.source.as_str())],
                self.end(&b.source).saturating_sub(cursor) as f64,
            );
            enc.counter(
                "weir_binding_invocations_total",
                "Plugin invocations run (every attempt).",
                &labels,
                s.invocations,
            );
            for (outcome, n) in [
                ("acked", s.acked - s.replied),
                ("replied", s.replied),
                ("dead_lettered", s.dead_lettered),
            ] {
                let mut l = labels.to_vec();
                l.push(("outcome", outcome));
                enc.counter(
                    "weir_binding_messages_total",
                    "Messages a binding finished, by outcome (durably committed).",
                    &l,
                    n,
                );
            }
            enc.counter(
                "weir_binding_retries_total",
                "Attempts that will be retried.",
                &labels,
                s.retried,
            );
            for class in CLASSES {
                let class = class.to_string();
                let mut l = labels.to_vec();
                l.push(("class", &class));
                enc.counter(
                    "weir_binding_failures_total",
                    "Failed invocations, by failure class.",
                    &l,
                    s.failures.get(&class).copied().unwrap_or_default(),
                );
            }
            enc.gauge(
                "weir_binding_up",
                "1 while the binding runs, 0 while it is stopped by an error and waiting to be restarted.",
                &labels,
                if s.up { 1.0 } else { 0.0 },
            );
            enc.counter(
                "weir_binding_restarts_total",
                "Times the binding was restarted after an error stopped it.",
                &labels,
                s.restarts,
            );
            enc.gauge(
                "weir_binding_in_flight",
                "Messages read and not finished.",
                &labels,
                s.in_flight as f64,
            );
            enc.gauge(
                "weir_binding_parked_keys",
                "Keys parked by a message that failed for good.",
                &labels,
                s.parked_keys as f64,
            );
            let dlq = &b.dead_letter;
            let redriven = self.storage.cursor(&b.name.redrive_cursor(dlq));
            let (first, _) = self.storage.usage(dlq).unwrap_or_default();
            enc.gauge(
                "weir_binding_dlq_messages",
                "Records of the binding's dead-letter queue not yet redriven.",
                &[("binding", b.name.as_str()), ("queue", dlq.as_str())],
                self.end(dlq).saturating_sub(redriven.max(first).0) as f64,
            );
            enc.histogram(
                "weir_binding_handler_seconds",
                "Time of one plugin invocation, as the delivery engine saw it.",
                &labels,
                &stats.handler.snapshot(),
            );
        }
    }
}
