//! The API's error body and status mapping.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::deploy::DeployError;
use crate::server::{
    DlqError, PublishError, RETRY_AFTER_SECS, ReplayError, RequestError, UnparkError,
};

/// An error answer: a status and `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds to wait before trying again (`Retry-After`), when the refusal is temporary.
    retry_after: Option<u64>,
    /// More fields of the error object (such as a stream's actual revision).
    details: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    /// Adds the fields of `details` (a JSON object) to the error object.
    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 for a malformed path segment.
    pub fn bad_path(e: axum::extract::rejection::PathRejection) -> ApiError {
        ApiError::bad_request("invalid_path", e.body_text())
    }

    /// 400 for a malformed query string.
    pub fn bad_query(e: axum::extract::rejection::QueryRejection) -> ApiError {
        ApiError::bad_request("invalid_query", e.body_text())
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> ApiError {
        let status = match &e {
            PublishError::UnknownDestination(_) => StatusCode::NOT_FOUND,
            PublishError::Reserved(_) | PublishError::StreamStore(_) => StatusCode::FORBIDDEN,
            PublishError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PublishError::Backpressure { .. } => StatusCode::TOO_MANY_REQUESTS,
            PublishError::Storage(_) | PublishError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        let mut error = ApiError::new(status, e.code(), e.to_string());
        if status == StatusCode::TOO_MANY_REQUESTS {
            error.retry_after = Some(RETRY_AFTER_SECS);
        }
        error
    }
}

impl From<DlqError> for ApiError {
    fn from(e: DlqError) -> ApiError {
        let status = match &e {
            DlqError::UnknownBinding(_) | DlqError::NotFound { .. } => StatusCode::NOT_FOUND,
            DlqError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<UnparkError> for ApiError {
    fn from(e: UnparkError) -> ApiError {
        let status = match &e {
            UnparkError::UnknownBinding(_) => StatusCode::NOT_FOUND,
            UnparkError::NotParked { .. } => StatusCode::CONFLICT,
            UnparkError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<ReplayError> for ApiError {
    fn from(e: ReplayError) -> ApiError {
        let status = match &e {
            ReplayError::UnknownBinding(_) => StatusCode::NOT_FOUND,
            ReplayError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        let status = match &e {
            RequestError::Publish(e) => return ApiError::from(e.clone()),
            RequestError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            RequestError::Duplicate { .. } => StatusCode::CONFLICT,
            RequestError::TooManyWaiting | RequestError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> ApiError {
        let status = match &e {
            DeployError::UnknownPlugin(_) | DeployError::UnknownVersion { .. } => {
                StatusCode::NOT_FOUND
            }
            DeployError::Refused(..) => StatusCode::UNPROCESSABLE_ENTITY,
            DeployError::NoPrevious(_)
            | DeployError::AlreadyActive { .. }
            | DeployError::Changed { .. }
            | DeployError::ChangedDuringRollback { .. }
            | DeployError::Conflict { .. } => StatusCode::CONFLICT,
            DeployError::TooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let (Some(serde_json::Value::Object(more)), Some(object)) =
            (self.details, error.as_object_mut())
        {
            object.extend(more);
        }
        let body = serde_json::json!({ "error": error });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}
