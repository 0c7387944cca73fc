//! The HTTP API, versioned under `/v1`. Every failure answers with a 4xx/5xx status and a JSON
//! body `{"error": {"code": "...", "message": "..."}}` whose `code` is stable.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/destinations/{name}/messages` | publish; body = payload; headers `weir-key`, `weir-id`, `weir-header-<name>` |
//! | `GET /v1/destinations/{name}/messages?from=&from_time_ms=&limit=&key=` | read stored messages (from an offset or a time; of one key) |
//! | `POST /v1/destinations/{name}/requests?timeout_ms=` | publish a request and answer with its reply (504 `request_timeout` when none comes in time); same body and headers as publishing |
//! | `GET /v1/bindings/{name}/dlq?from=&limit=` | dead letters of a binding not yet redriven |
//! | `GET /v1/bindings/{name}/dlq/{offset}` | one dead letter, by its offset in the dead-letter queue |
//! | `POST /v1/bindings/{name}/dlq/redrive?limit=` | send dead letters back to the binding's source |
//! | `GET /v1/stats` | counters of destinations (with depth), bindings, plugins |
//! | `GET /v1/plugins` | every plugin with its versions, the active one, counts and refused deploys |
//! | `GET /v1/plugins/{name}` | one plugin, the same way |
//! | `POST /v1/plugins/{name}/versions` | deploy: body = the component (`.wasm`); 201 when swapped in, 200 when already active, 422 `invalid_plugin` when refused |
//! | `POST /v1/plugins/{name}/rollback?version=` | back to `version`, or to the version active before the current one |
//! | `GET /v1/plugins/{name}/kv?prefix=&limit=` | a plugin's key-value state |
//! | `GET /v1/health` | liveness |

mod dlq;
mod error;
mod messages;
mod plugins;
mod requests;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::names::PluginName;
use crate::server::Runtime;
pub use error::ApiError;

type AppState = Arc<Runtime>;

/// The router of the whole API.
pub fn router(runtime: Arc<Runtime>) -> Router {
    // Room for the largest payload plus framing; larger bodies get 413 before being buffered.
    let body_limit = runtime.config.server.max_message_size as usize + 1;
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/stats", get(stats))
        .route(
            "/v1/destinations/{name}/messages",
            post(messages::publish).get(messages::read),
        )
        .route("/v1/destinations/{name}/requests", post(requests::request))
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/plugins/{name}", get(plugins::show))
        .route(
            "/v1/plugins/{name}/versions",
            post(plugins::deploy).layer(DefaultBodyLimit::max(plugins::MAX_COMPONENT_BYTES)),
        )
        .route("/v1/plugins/{name}/rollback", post(plugins::rollback))
        .route("/v1/plugins/{name}/kv", get(kv))
        .route("/v1/bindings/{name}/dlq", get(dlq::list))
        .route("/v1/bindings/{name}/dlq/redrive", post(dlq::redrive))
        .route("/v1/bindings/{name}/dlq/{offset}", get(dlq::show))
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such route; see /v1/...",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(runtime)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn stats(State(rt): State<AppState>) -> Json<crate::server::StatsSnapshot> {
    Json(rt.stats())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KvQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    start_after: Option<String>,
    #[serde(default = "default_kv_limit")]
    limit: usize,
}

fn default_kv_limit() -> usize {
    100
}

async fn kv(
    State(rt): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<KvQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let Query(q) = query.map_err(ApiError::bad_query)?;
    let plugin =
        PluginName::new(name).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    if !rt.plugins.contains(&plugin) {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown_plugin",
            format!("no plugin named `{plugin}`"),
        ));
    }
    let limit = q.limit.min(1000);
    let keys = rt
        .storage
        .kv_list(&plugin, &q.prefix, q.start_after.as_deref(), limit);
    let entries: Vec<serde_json::Value> = keys
        .into_iter()
        .filter_map(|k| {
            let v = rt.storage.kv_get(&plugin, &k)?;
            Some(messages::with_bytes(
                serde_json::json!({ "key": k }),
                "value",
                &v,
            ))
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "plugin": plugin.as_str(), "entries": entries }),
    ))
}
