//! The HTTP API, versioned under `/v1`. Every failure answers with a 4xx/5xx status and a JSON
//! body `{"error": {"code": "...", "message": "..."}}` whose `code` is stable.
//!
//! Every route, with its query parameters, is in [`routes`] (served as `GET
//! /v1/openapi.json`).
//! With `server.api_token` set, every route but `/v1/health` needs `Authorization: Bearer
//! <token>` (401 `unauthorized` otherwise).

mod aggregates;
mod auth;
mod batch;
mod count;
mod dlq;
mod error;
mod follow;
mod messages;
mod openapi;
mod park;
mod plugins;
mod publish_ws;
mod replay;
mod requests;
mod streams;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::{MethodRouter, delete, get, post};
use serde::Deserialize;

use crate::names::PluginName;
use crate::server::Runtime;
pub use error::ApiError;
pub use openapi::openapi;

type AppState = Arc<Runtime>;

/// One route of the API: what the router serves and the OpenAPI document lists, from one
/// table ([`routes`]).
pub struct Route {
    /// The HTTP method.
    pub method: Method,
    /// The path, with `{param}` segments.
    pub path: &'static str,
    /// One line saying what it does.
    pub summary: &'static str,
    /// Query parameters: name and meaning.
    pub query: &'static [(&'static str, &'static str)],
    /// Whether it answers without the API token.
    pub public: bool,
    handler: MethodRouter<AppState>,
}

impl Route {
    fn new(method: Method, path: &'static str, summary: &'static str) -> Route {
        let handler = MethodRouter::new();
        Route {
            method,
            path,
            summary,
            query: &[],
            public: false,
            handler,
        }
    }

    fn query(mut self, query: &'static [(&'static str, &'static str)]) -> Route {
        self.query = query;
        self
    }

    fn to(mut self, handler: MethodRouter<AppState>) -> Route {
        self.handler = handler;
        self
    }
}

/// Every route of the API. The router and the OpenAPI document (`GET /v1/openapi.json`) are
/// both built from this table; a route added here is served and documented.
pub fn routes() -> Vec<Route> {
    use Method as M;
    vec![
        Route {
            public: true,
            ..Route::new(M::GET, "/v1/health", "health: 200 while every binding runs, 503 naming the bindings stopped by an error").to(get(health))
        },
        Route::new(M::GET, "/v1/openapi.json", "this API's OpenAPI document").to(get(openapi::serve)),
        Route::new(M::GET, "/metrics", "metrics in the Prometheus text format").to(get(metrics)),
        Route::new(M::GET, "/v1/stats", "counters of destinations (with depth), bindings, plugins")
            .to(get(stats)),
        Route::new(
            M::POST,
            "/v1/destinations/{name}/messages",
            "publish one message; body = payload; headers `weir-key`, `weir-id`, `weir-header-<name>`",
        )
        .to(post(messages::publish)),
        Route::new(
            M::POST,
            "/v1/destinations/{name}/messages/batch",
            "publish messages in order: JSON `{\"messages\": [{\"payload\" or \"payload_hex\", \"key\", \"id\", \"headers\"}]}`; all or none are accepted",
        )
        .to(post(batch::publish)),
        Route::new(
            M::GET,
            "/v1/destinations/{name}/publish",
            "streaming publish over a WebSocket: one message per publish, each acknowledged in order with its offset once durable",
        )
        .to(get(publish_ws::publish)),
        Route::new(
            M::GET,
            "/v1/destinations/{name}/messages",
            "read stored messages from an offset or a time; with `wait_ms`, wait (long poll) until one is there",
        )
        .query(&[
            ("from", "first offset (default 0)"),
            ("from_time_ms", "start at the first message stored at or after this time (ms since the epoch)"),
            ("key", "only messages with this key"),
            ("limit", "most messages (default 100, at most 1000)"),
            ("wait_ms", "when there is none yet, wait up to this long for one (at most 60000)"),
        ])
        .to(get(messages::read)),
        Route::new(
            M::GET,
            "/v1/destinations/{name}/messages/stream",
            "follow with server-sent events: each message (from an offset, a time, or after `Last-Event-ID`) as an event `message` with `id` = its offset and JSON `data`",
        )
        .query(&[
            ("from", "first offset (default 0)"),
            ("from_time_ms", "start at the first message stored at or after this time"),
            ("key", "only messages with this key"),
            ("limit", "end after this many messages (default: follow until the server stops)"),
        ])
        .to(get(follow::follow)),
        Route::new(
            M::POST,
            "/v1/destinations/{name}/requests",
            "publish a request and answer with its reply (504 `request_timeout` when none comes in time)",
        )
        .query(&[("timeout_ms", "how long to wait for the reply (default 5000, at most 300000)")])
        .to(post(requests::request)),
        Route::new(
            M::GET,
            "/v1/plugins",
            "every plugin with its versions, the active one, invocation and failure counts, refused deploys",
        )
        .to(get(plugins::list)),
        Route::new(M::GET, "/v1/plugins/{name}", "one plugin with its versions").to(get(plugins::show)),
        Route::new(
            M::POST,
            "/v1/plugins/{name}/versions",
            "deploy: body = the component (`.wasm`, up to 256 MiB); 201 when swapped in, 200 when that content is already active, 422 `invalid_plugin` when refused (the running version stays); with `rebuild=true`, 202: the new version rebuilds its key-value state from offset 0 of its binding's source in shadow while the running version serves, and is swapped in once caught up (follow it at /v1/plugins/{name}/rebuild)",
        )
        .query(&[("rebuild", "`true`: rebuild the key-value state in shadow before the swap")])
        .to(post(plugins::deploy)),
        Route::new(
            M::GET,
            "/v1/plugins/{name}/rebuild",
            "the plugin's latest shadow rebuild: phase (`rebuilding`, `swapping`, `done`, `failed`), position, live cursor, records handled and failed, error",
        )
        .to(get(plugins::rebuild)),
        Route::new(
            M::POST,
            "/v1/plugins/{name}/rollback",
            "go back to an earlier version (default: the one active before the current one)",
        )
        .query(&[("version", "the version to go back to")])
        .to(post(plugins::rollback)),
        Route::new(M::GET, "/v1/plugins/{name}/kv", "a plugin's key-value state")
            .query(&[
                ("prefix", "only keys starting with this"),
                ("start_after", "keys after this one"),
                ("limit", "most entries (default 100, at most 1000)"),
            ])
            .to(get(kv)),
        Route::new(M::GET, "/v1/bindings/{name}", "one binding's counters and cursor, as in /v1/stats")
            .to(get(binding_stats)),
        Route::new(M::GET, "/v1/bindings/{name}/dlq", "dead letters of a binding not yet redriven")
            .query(&[
                ("from", "offset of the dead-letter queue to list from"),
                ("limit", "most dead letters (default 100, at most 1000)"),
            ])
            .to(get(dlq::list)),
        Route::new(
            M::GET,
            "/v1/bindings/{name}/dlq/{offset}",
            "one dead letter, by its offset in the dead-letter queue",
        )
        .to(get(dlq::show)),
        Route::new(
            M::POST,
            "/v1/bindings/{name}/dlq/redrive",
            "send dead letters back to the binding's source",
        )
        .query(&[("limit", "most dead letters to redrive (default all)")])
        .to(post(dlq::redrive)),
        Route::new(
            M::POST,
            "/v1/bindings/{name}/replay",
            "re-deliver a range of the binding's source to this binding alone",
        )
        .query(&[
            ("from", "first offset (default 0)"),
            ("from_time_ms", "start at the first message stored at or after this time"),
            ("to", "end of the range, exclusive (default: the source's end now)"),
            ("limit", "most records this call (default and at most 10000); continue from `next`"),
            ("run", "the replay's id: calls with the same run store each copy once"),
        ])
        .to(post(replay::replay)),
        Route::new(
            M::POST,
            "/v1/bindings/{name}/unpark",
            "release parked keys: each one's parked message runs again from its first attempt, then the key's later messages in order; answers what was released (404 `unknown_binding`, 409 `key_not_parked`)",
        )
        .query(&[("key", "the key to unpark (default: every parked key of the binding)")])
        .to(post(park::unpark)),
        Route::new(
            M::POST,
            "/v1/streams/{store}/streams/{stream}",
            "append events to one stream: JSON `{\"expected_revision\": \"any\" | \"no-stream\" | \"stream-exists\" | N, \"events\": [{\"type\", \"id\", \"data\" or \"payload\" or \"payload_hex\", \"headers\", \"schema_version\", \"correlation_id\", \"causation_id\"}]}`; 201 with the revisions, 200 for a retry whose event ids are all stored, 409 `wrong_expected_revision` with `actual_revision`",
        )
        .to(post(streams::append_one)),
        Route::new(
            M::GET,
            "/v1/streams/{store}/streams/{stream}",
            "read one stream forwards or backwards from a revision (404 `stream_not_found`, 410 `stream_deleted`)",
        )
        .query(&[
            ("from", "first revision (default: the first, or the last going backwards)"),
            ("direction", "`forward` (default) or `backward`"),
            ("limit", "most events (default 100, at most 1000)"),
        ])
        .to(get(streams::read_stream)),
        Route::new(
            M::DELETE,
            "/v1/streams/{store}/streams/{stream}",
            "delete a stream: soft (reads as not found, the name can be appended to again) or hard (tombstone: no more appends)",
        )
        .query(&[
            ("hard", "`true` for a tombstone (default false)"),
            ("expected_revision", "the stream must be at this revision (`any` by default)"),
        ])
        .to(delete(streams::delete)),
        Route::new(
            M::POST,
            "/v1/streams/{store}/append",
            "append to several streams of one store, all or nothing: JSON `{\"appends\": [{\"stream\", \"expected_revision\", \"events\": [...]}]}`",
        )
        .to(post(streams::append_many)),
        Route::new(
            M::GET,
            "/v1/streams/{store}/events",
            "read the whole store ($all), a category or an event type, in position (commit) order",
        )
        .query(&[
            ("from", "first position (default 0)"),
            ("category", "only streams of this category (the part of the name before the first `-`)"),
            ("type", "only events of this type"),
            ("limit", "most events (default 100, at most 1000)"),
        ])
        .to(get(streams::read_all)),
        Route::new(
            M::GET,
            "/v1/streams/{store}/events/follow",
            "catch-up subscription with server-sent events: each event (from a position, or after `Last-Event-ID`) as `event` with `id` = its position, one `caught-up` when it reaches the end, then new events",
        )
        .query(&[
            ("from", "first position (default 0)"),
            ("category", "only streams of this category"),
            ("type", "only events of this type"),
            ("limit", "end after this many events (default: follow until the server stops)"),
        ])
        .to(get(streams::follow)),
        Route::new(
            M::POST,
            "/v1/aggregates/{aggregate}/{id}/commands",
            "send a command to aggregate instance `id` (stream `<category>-<id>`): JSON `{\"type\", \"command_id\", \"data\" or \"payload\" or \"payload_hex\", \"headers\"}`; 201 with the revisions appended, 200 when it decided nothing or was handled before (same `command_id`), 422 `command_rejected`, 400 `invalid_command`, 409 `aggregate_terminal` or `command_contended`, 500 `aggregate_failed` (trap, timeout): nothing is appended unless 201",
        )
        .to(post(aggregates::command)),
        Route::new(
            M::GET,
            "/v1/aggregates/{aggregate}/{id}",
            "the current state of aggregate instance `id` (folded from its snapshot and events) and its revision",
        )
        .to(get(aggregates::state)),
        Route::new(
            M::POST,
            "/v1/aggregates/{aggregate}/versions",
            "deploy a new version of an aggregate (body: the component): up to 100 streams of its category are folded through both versions first; 201 when swapped, 200 when the same component runs already, 409 `evolve_disagrees` (with the first differing `stream` and `revision`) unless the new version declares a higher state-version, 409 `evolve_fails`, `state_version_lowered`, 400 `invalid_component`; kept across restarts while the configured file is unchanged",
        )
        .to(post(aggregates::deploy)),
    ]
}

/// The router of the whole API.
pub fn router(runtime: Arc<Runtime>) -> Router {
    // Room for the largest payload plus framing; larger bodies get 413 before being buffered.
    let body_limit = runtime.config.server.max_message_size as usize + 1;
    // The methods of one path are served (and counted) together.
    let mut paths: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    let mut public = Vec::new();
    for route in routes() {
        if route.public {
            public.push(route.path);
        }
        let handler = if route.path.ends_with("/batch") {
            route
                .handler
                .layer(DefaultBodyLimit::max(batch::MAX_BATCH_BYTES))
        } else if !route.path.ends_with("/versions")
            && (route.path.starts_with("/v1/streams/") || route.path.starts_with("/v1/aggregates/"))
        {
            route
                .handler
                .layer(DefaultBodyLimit::max(streams::MAX_APPEND_BYTES))
        } else if route.path.ends_with("/versions") {
            route
                .handler
                .layer(DefaultBodyLimit::max(plugins::MAX_COMPONENT_BYTES))
        } else {
            route.handler
        };
        match paths.iter_mut().find(|(path, _)| *path == route.path) {
            Some((_, methods)) => {
                *methods = std::mem::replace(methods, MethodRouter::new()).merge(handler);
            }
            None => paths.push((route.path, handler)),
        }
    }
    let requests = Arc::new(count::Requests::new(paths.iter().map(|(path, _)| *path)));
    runtime
        .metrics
        .collector(count::NAME, Arc::clone(&requests) as _);
    let mut router = Router::new();
    for (row, (path, methods)) in paths.into_iter().enumerate() {
        // The mark goes around the path's 405 too, so every answer of a known path is counted
        // under it.
        let methods = methods
            .fallback(method_not_allowed)
            .layer(axum::middleware::map_response(
                move |mut response: axum::response::Response| async move {
                    response
                        .extensions_mut()
                        .insert(count::Answered::Route(row));
                    response
                },
            ));
        router = router.route(path, methods);
    }
    let mut router = router
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; GET /v1/openapi.json lists them",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit));
    // Without a token there is nothing to check: no layer (each costs every request a clone of
    // the service under it and a boxed future).
    let auth = auth::Auth::new(&runtime, public);
    if auth.required() {
        router = router.layer(axum::middleware::from_fn_with_state(auth, auth::check));
    }
    router
        .layer(axum::middleware::from_fn_with_state(requests, count::count))
        .with_state(runtime)
}

async fn binding_stats(
    State(rt): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<crate::server::BindingStatsView>, ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    Ok(Json(rt.binding_stats(&name)?))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route; GET /v1/openapi.json lists them",
    )
}

async fn metrics(State(rt): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        rt.render_metrics(),
    )
}

/// `200 {"status":"ok"}` while every binding runs; `503 {"status":"unhealthy", "bindings_down":
/// [...]}` while one is stopped by an error (it is being restarted; `weir stats` says why).
async fn health(State(rt): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let down: Vec<&str> = rt
        .config
        .bindings
        .iter()
        .filter(|b| !rt.bindings[&b.name].up())
        .map(|b| b.name.as_str())
        .collect();
    if down.is_empty() {
        (StatusCode::OK, Json(serde_json::json!({ "status": "ok" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unhealthy", "bindings_down": down })),
        )
    }
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
            StatusCode::NOT_FOUND,
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
