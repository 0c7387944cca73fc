//! Batch publishing over HTTP: `POST /v1/destinations/{name}/messages/batch` with
//! `{"messages": [{"payload" or "payload_hex", "key", "id", "headers"}]}`, validated whole
//! before anything is stored.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::error::ApiError;
use crate::server::{PublishRequest, Runtime};

/// Largest body of a batch publish.
pub(super) const MAX_BATCH_BYTES: usize = 16 << 20;
/// Most messages in one batch publish.
pub(super) const MAX_BATCH: usize = 1000;
/// One message of a batch publish (and a text message of a streaming publish).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchMessage {
    /// The payload as text.
    #[serde(default)]
    payload: Option<String>,
    /// Or as hex, for binary payloads.
    #[serde(default)]
    payload_hex: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    messages: Vec<BatchMessage>,
}

pub(super) async fn publish(
    State(rt): State<Arc<Runtime>>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Path(name) = name.map_err(ApiError::bad_path)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("a batch body is at most {MAX_BATCH_BYTES} bytes"),
            )
        } else {
            ApiError::bad_request("invalid_body", e.body_text())
        }
    })?;
    let json_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(true);
    if !json_type {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a batch is JSON: send `Content-Type: application/json`",
        ));
    }
    let batch: Batch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("expected {{\"messages\": [{{\"payload\": \"...\"}}, ...]}}: {e}"),
        )
    })?;
    if batch.messages.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "{} messages; a batch holds at most {MAX_BATCH}",
                batch.messages.len()
            ),
        ));
    }
    let mut requests = Vec::with_capacity(batch.messages.len());
    for (i, m) in batch.messages.into_iter().enumerate() {
        let request = m
            .into_request(&format!("messages[{i}]"))
            .map_err(|e| ApiError::bad_request("invalid_json", e))?;
        requests.push(request);
    }
    let dest = name.clone();
    let published = tokio::task::spawn_blocking(move || rt.publish_batch(&dest, requests))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    let status = if published.iter().all(|p| p.duplicate) && !published.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(serde_json::json!({ "destination": name, "messages": published })),
    ))
}

impl BatchMessage {
    /// The message to publish; `what` names it in an error.
    pub(super) fn into_request(self, what: &str) -> Result<PublishRequest, String> {
        let payload = match (self.payload, self.payload_hex) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(hex)) => unhex(&hex)
                .ok_or_else(|| format!("{what}.payload_hex is not an even number of hex digits"))?,
            (None, None) => Vec::new(),
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{what} has both `payload` and `payload_hex`; give one"
                ));
            }
        };
        Ok(PublishRequest {
            payload,
            key: self.key,
            id: self.id,
            headers: self.headers.into_iter().collect(),
        })
    }
}

pub(super) fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}
