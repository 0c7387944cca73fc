//! The Prometheus text exposition format (version 0.0.4): one `# HELP` and `# TYPE` per family,
//! then its samples, every family's samples together.

use std::collections::HashMap;
use std::fmt::Write;

use super::histogram::{BOUNDS_NS, HistogramSnapshot};

/// Collects samples by family and writes them out grouped.
#[derive(Debug, Default)]
pub struct Encoder {
    families: Vec<Family>,
    index: HashMap<&'static str, usize>,
}

#[derive(Debug)]
struct Family {
    header: String,
    samples: String,
}

impl Encoder {
    /// A counter sample.
    pub fn counter(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], v: u64) {
        let samples = self.family(name, help, "counter");
        sample(samples, name, labels, None, &v.to_string());
    }

    /// A gauge sample.
    pub fn gauge(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], v: f64) {
        let samples = self.family(name, help, "gauge");
        sample(samples, name, labels, None, &number(v));
    }

    /// A histogram of durations (in seconds): `_bucket` per bound, `_sum` and `_count`.
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &[(&str, &str)],
        h: &HistogramSnapshot,
    ) {
        let samples = self.family(name, help, "histogram");
        let bucket = format!("{name}_bucket");
        for (i, count) in h.cumulative.iter().enumerate() {
            let le = match BOUNDS_NS.get(i) {
                Some(ns) => number(*ns as f64 / 1e9),
                None => "+Inf".to_owned(),
            };
            sample(samples, &bucket, labels, Some(&le), &count.to_string());
        }
        sample(
            samples,
            &format!("{name}_sum"),
            labels,
            None,
            &number(h.sum_seconds),
        );
        sample(
            samples,
            &format!("{name}_count"),
            labels,
            None,
            &h.count().to_string(),
        );
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for f in self.families {
            out.push_str(&f.header);
            out.push_str(&f.samples);
        }
        out
    }

    fn family(&mut self, name: &'static str, help: &str, kind: &str) -> &mut String {
        let i = *self.index.entry(name).or_insert_with(|| {
            let mut header = String::new();
            let _ = writeln!(header, "# HELP {name} {}", escape_help(help));
            let _ = writeln!(header, "# TYPE {name} {kind}");
            self.families.push(Family {
                header,
                samples: String::new(),
            });
            self.families.len() - 1
        });
        &mut self.families[i].samples
    }
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], le: Option<&str>, v: &str) {
    out.push_str(name);
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    let mut first = true;
    for (k, val) in all {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape_label(val));
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(v);
    out.push('\n');
}

fn number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else if v.is_nan() {
        "NaN".to_owned()
    } else if v > 0.0 {
        "+Inf".to_owned()
    } else {
        "-Inf".to_owned()
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Histogram;

    #[test]
    fn samples_of_a_family_are_written_together_under_one_header() {
        let mut e = Encoder::default();
        e.gauge("a", "A.", &[("x", "1")], 1.0);
        e.counter("b_total", "B.", &[], 7);
        e.gauge("a", "A.", &[("x", "q\"\\\n")], 2.5);
        assert_eq!(
            e.finish(),
            "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\na{x=\"q\\\"\\\\\\n\"} 2.5\n\
             # HELP b_total B.\n# TYPE b_total counter\nb_total 7\n"
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_a_sum_and_a_count() {
        let h = Histogram::new();
        h.observe_ns(2_000_000);
        let mut e = Encoder::default();
        e.histogram("h_seconds", "H.", &[("b", "x")], &h.snapshot());
        let text = e.finish();
        assert!(
            text.contains("h_seconds_bucket{b=\"x\",le=\"0.001\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("h_seconds_bucket{b=\"x\",le=\"0.0025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("h_seconds_bucket{b=\"x\",le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("h_seconds_sum{b=\"x\"} 0.002\n"), "{text}");
        assert!(text.contains("h_seconds_count{b=\"x\"} 1\n"), "{text}");
    }
}
