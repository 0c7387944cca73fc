//! Aggregates over HTTP: `POST /v1/aggregates/{aggregate}/{id}/commands` routes a command to
//! instance `id` (stream `<category>-<id>`), and `GET /v1/aggregates/{aggregate}/{id}` reads
//! the instance's current state.
//!
//! A command in JSON: `{"type", "command_id", "data"}` (`data` any JSON value; or `payload`
//! as text, or `payload_hex`), with optional `headers`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::error::ApiError;
use crate::es::{AggregateDeployed, AggregateRunner, CommandError, CommandRequest, DeployError};
use crate::host::AggregateSpec;
use crate::names::PluginName;
use crate::server::Runtime;

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        let status = match &e {
            CommandError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            CommandError::Invalid(_) => StatusCode::BAD_REQUEST,
            CommandError::Terminal(_) | CommandError::Contended { .. } => StatusCode::CONFLICT,
            CommandError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            CommandError::Stream(s) => return ApiError::from(s.clone()),
        };
        let mut error = ApiError::new(status, e.code(), e.to_string());
        if let CommandError::Failed { failure, .. } = &e {
            error = error.with_details(serde_json::json!({ "class": failure.class }));
        }
        error
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandJson {
    #[serde(rename = "type")]
    command_type: String,
    #[serde(default)]
    command_id: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_hex: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

fn aggregate(rt: &Runtime, name: &str) -> Result<Arc<AggregateRunner>, ApiError> {
    let name =
        PluginName::new(name).map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    rt.aggregates.get(&name).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_aggregate",
            format!("no aggregate named `{name}`; declare it as [aggregates.{name}]"),
        )
    })
}

/// Bytes as JSON when they are JSON, else as text when UTF-8, else as hex.
fn show(bytes: &[u8]) -> serde_json::Value {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        return v;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::Value::String(text.to_owned()),
        Err(_) => serde_json::json!({
            "hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        }),
    }
}

/// `POST /v1/aggregates/{aggregate}/{id}/commands`.
pub(super) async fn command(
    State(rt): State<Arc<Runtime>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Path((name, id)) = path.map_err(ApiError::bad_path)?;
    let runner = aggregate(&rt, &name)?;
    let body: CommandJson =
        super::streams::json_body(body, r#"{"type": "...", "command_id": "...", "data": ...}"#)?;
    let payload = match (body.data, body.payload, body.payload_hex) {
        (Some(v), None, None) => v.to_string().into_bytes(),
        (None, Some(text), None) => text.into_bytes(),
        (None, None, Some(hex)) => super::batch::unhex(&hex).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_json",
                "`payload_hex` is not an even number of hex digits",
            )
        })?,
        (None, None, None) => Vec::new(),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "give one of `data`, `payload` and `payload_hex`",
            ));
        }
    };
    let max = rt.config.server.max_message_size as usize;
    if payload.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the command payload is {} bytes; the limit is {max} (server.max_message_size)",
                payload.len()
            ),
        ));
    }
    let request = CommandRequest {
        command_id: body.command_id,
        command_type: body.command_type,
        payload,
        headers: body.headers,
    };
    let answer = runner.command(&id, request).await?;
    let status = if answer.appended.is_some() && !answer.duplicate {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut json = serde_json::to_value(&answer).unwrap_or_default();
    json["reply"] = answer
        .reply
        .as_deref()
        .map_or(serde_json::Value::Null, show);
    Ok((status, Json(json)))
}

/// `GET /v1/aggregates/{aggregate}/{id}`.
pub(super) async fn state(
    State(rt): State<Arc<Runtime>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path((name, id)) = path.map_err(ApiError::bad_path)?;
    let runner = aggregate(&rt, &name)?;
    let stream = runner.stream_of(&id).map_err(CommandError::from)?;
    let (revision, state) = runner.state(&id).await?;
    Ok(Json(serde_json::json!({
        "stream": stream.as_str(),
        "revision": revision,
        "state": show(&state),
        "stats": runner.stats(),
    })))
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> ApiError {
        match &e {
            DeployError::Disagrees {
                stream, revision, ..
            } => ApiError::new(StatusCode::CONFLICT, "evolve_disagrees", e.to_string())
                .with_details(serde_json::json!({ "stream": stream, "revision": revision })),
            DeployError::Fails {
                stream, revision, ..
            } => ApiError::new(StatusCode::CONFLICT, "evolve_fails", e.to_string())
                .with_details(serde_json::json!({ "stream": stream, "revision": revision })),
            DeployError::Downgrade { .. } => {
                ApiError::new(StatusCode::CONFLICT, "state_version_lowered", e.to_string())
            }
            DeployError::Stream(s) => ApiError::from(s.clone()),
        }
    }
}

/// `POST /v1/aggregates/{aggregate}/versions`: deploys a new component (the body), verified
/// against the running one.
pub(super) async fn deploy(
    State(rt): State<Arc<Runtime>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<AggregateDeployed>), ApiError> {
    let Path(name) = path.map_err(ApiError::bad_path)?;
    let runner = aggregate(&rt, &name)?;
    let body = body.map_err(|e| {
        ApiError::new(
            e.status(),
            "invalid_body",
            format!(
                "{} (components up to {} bytes are accepted)",
                e.body_text(),
                super::plugins::MAX_COMPONENT_BYTES
            ),
        )
    })?;
    // Compiles and runs wasm: on a blocking thread, not on an async worker.
    let deployed = tokio::task::spawn_blocking(move || -> Result<AggregateDeployed, ApiError> {
        let config = &rt.config.aggregates[runner.name()];
        let spec = AggregateSpec {
            name: runner.name().clone(),
            path: std::path::PathBuf::from("upload"),
            limits: config.limits,
        };
        let loaded = rt
            .host()
            .load_aggregate_bytes(spec, &body, Arc::clone(&rt.storage), true)
            .map_err(|e| ApiError::bad_request("invalid_component", e.to_string()))?;
        let deployed = runner.deploy(loaded)?;
        if deployed.swapped {
            crate::server::aggregates::keep_deployed(
                &rt.config.server.data_dir,
                runner.name(),
                &config.path,
                &body,
            )
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage",
                    format!("the new version runs, but keeping it for restarts failed: {e}"),
                )
            })?;
            tracing::info!(
                aggregate = %runner.name(),
                hash = %deployed.hash,
                state_version = deployed.state_version,
                streams_checked = deployed.streams_checked,
                "aggregate deployed"
            );
        }
        Ok(deployed)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    let status = if deployed.swapped {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(deployed)))
}
