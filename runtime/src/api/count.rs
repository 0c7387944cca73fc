//! `weir_http_requests_total{route, method, status}`: every answer counted without a lock or a
//! lookup per request, in a table fixed when the router is built. Its rows are the route paths
//! of [`super::routes`], then `unmatched` (no route) and `unauthenticated` (refused by the token
//! check, before routing); its columns a closed set of methods, [`METHODS`], where every other
//! token a client sends counts as `other`, so nobody can grow the series by inventing methods.
//! Each cell holds a counter per status (100 to 999), allocated when the cell is first used.
//!
//! The route that answers marks its response with [`Answered`] (a layer added per route path
//! at router build time, around the route's 405 too); the outermost layer, [`count`], reads
//! the mark and adds one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::{Collect, Encoder};

/// The metric's name.
pub(super) const NAME: &str = "weir_http_requests_total";

/// The method labels, in column order; the last, `other`, stands for every other method.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other",
];

/// Statuses counted per cell: 100 to 999, every code `http` can represent.
const FIRST_STATUS: u16 = 100;
const STATUSES: usize = 900;

fn column(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::PATCH => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Who answered a request: the route of this index in the table, or the token check.
#[derive(Debug, Clone, Copy)]
pub(super) enum Answered {
    /// The route path at this row.
    Route(usize),
    /// Refused before routing.
    Unauthenticated,
}

/// The table of counters.
pub(super) struct Requests {
    /// Row labels: the route paths, `unmatched`, `unauthenticated`.
    rows: Vec<&'static str>,
    /// `rows.len() * METHODS.len()` cells, row-major.
    cells: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl Requests {
    /// A table for these route paths (each once, in the order rows are rendered).
    pub(super) fn new(paths: impl IntoIterator<Item = &'static str>) -> Requests {
        let mut rows: Vec<&'static str> = paths.into_iter().collect();
        rows.extend(["unmatched", "unauthenticated"]);
        let cells = (0..rows.len() * METHODS.len())
            .map(|_| OnceLock::new())
            .collect();
        Requests { rows, cells }
    }

    /// Adds one answer.
    pub(super) fn add(&self, answered: Option<Answered>, method: &Method, status: StatusCode) {
        let routes = self.rows.len() - 2;
        let row = match answered {
            Some(Answered::Route(i)) if i < routes => i,
            Some(Answered::Unauthenticated) => routes + 1,
            _ => routes,
        };
        let cell = self.cells[row * METHODS.len() + column(method)]
            .get_or_init(|| (0..STATUSES).map(|_| AtomicU64::new(0)).collect());
        let status = usize::from(status.as_u16().saturating_sub(FIRST_STATUS)).min(STATUSES - 1);
        cell[status].fetch_add(1, Relaxed);
    }
}

impl Collect for Requests {
    fn encode(&self, enc: &mut Encoder) {
        for (i, cell) in self.cells.iter().enumerate() {
            let Some(counts) = cell.get() else { continue };
            let route = self.rows[i / METHODS.len()];
            let method = METHODS[i % METHODS.len()];
            for (s, n) in counts.iter().enumerate() {
                let n = n.load(Relaxed);
                if n == 0 {
                    continue;
                }
                let status = (FIRST_STATUS as usize + s).to_string();
                enc.counter(
                    NAME,
                    "HTTP requests answered, by route, method and status.",
                    &[("route", route), ("method", method), ("status", &status)],
                    n,
                );
            }
        }
    }
}

/// The outermost layer: counts every answer under the route that marked it.
pub(super) async fn count(
    State(requests): State<Arc<Requests>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let answered = response.extensions().get::<Answered>().copied();
    requests.add(answered, &method, response.status());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_closed_set_share_one_column_and_statuses_their_cell() {
        let r = Requests::new(["/a", "/b"]);
        for token in ["GET", "get", "BREW", "PROPFIND", "X-1", "CONNECT", "TRACE"] {
            let method = Method::from_bytes(token.as_bytes()).unwrap();
            r.add(
                Some(Answered::Route(1)),
                &method,
                StatusCode::METHOD_NOT_ALLOWED,
            );
        }
        r.add(None, &Method::POST, StatusCode::NOT_FOUND);
        r.add(
            Some(Answered::Unauthenticated),
            &Method::DELETE,
            StatusCode::UNAUTHORIZED,
        );
        r.add(Some(Answered::Route(0)), &Method::GET, StatusCode::OK);
        r.add(Some(Answered::Route(0)), &Method::GET, StatusCode::OK);
        let mut enc = Encoder::default();
        r.encode(&mut enc);
        let text = enc.finish();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "weir_http_requests_total{route=\"/a\",method=\"GET\",status=\"200\"} 2",
                "weir_http_requests_total{route=\"/b\",method=\"GET\",status=\"405\"} 1",
                "weir_http_requests_total{route=\"/b\",method=\"other\",status=\"405\"} 6",
                "weir_http_requests_total{route=\"unmatched\",method=\"POST\",status=\"404\"} 1",
                "weir_http_requests_total{route=\"unauthenticated\",method=\"DELETE\",status=\"401\"} 1",
            ]
        );
    }
}
