//! Bearer-token authentication: with `server.api_token` set (or `WEIR_API_TOKEN`), every
//! request but those of public routes must carry `Authorization: Bearer <token>`; anything
//! else is refused with 401 `unauthorized` before its handler runs, so it changes nothing.
//! Refusals are counted in `weir_http_requests_total` with `route="unauthenticated"`: they are
//! answered before routing, so their route is not known (the response carries
//! [`Answered::Unauthenticated`] to the counting layer).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::count::Answered;
use super::error::ApiError;
use crate::server::Runtime;

/// What the check needs: the token's digest (when one is configured) and the public paths.
#[derive(Clone)]
pub(super) struct Auth {
    token: Option<Arc<[u8; 32]>>,
    public: Arc<[&'static str]>,
}

impl Auth {
    pub(super) fn new(rt: &Runtime, public: Vec<&'static str>) -> Auth {
        Auth {
            token: rt
                .config
                .server
                .api_token
                .as_deref()
                .map(|t| Arc::new(digest(t.as_bytes()))),
            public: public.into(),
        }
    }

    /// Whether requests need a token (`server.api_token` is set).
    pub(super) fn required(&self) -> bool {
        self.token.is_some()
    }
}

/// Compares digests, so the time taken says nothing about how much of a guess was right.
fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub(super) async fn check(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let Some(expected) = &auth.token else {
        return next.run(request).await;
    };
    if auth.public.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let message = match presented {
        Some(token) if digest(token.as_bytes()) == **expected => {
            return next.run(request).await;
        }
        Some(_) => "the bearer token is wrong",
        None => "this server requires `Authorization: Bearer <token>` (server.api_token)",
    };
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.extensions_mut().insert(Answered::Unauthenticated);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"weir\""),
    );
    response
}
