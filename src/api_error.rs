//! Every error the HTTP API can answer, and the one place that maps them to
//! status codes and `{"error": "<code>", "message": "<text>"}` bodies.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::intake::formats::PayloadError;
use crate::intake::verify::VerifyError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "no webhook source named \"{0}\" is configured; check the URL path against [[sources]] names"
    )]
    UnknownSource(String),
    #[error("Content-Type must be application/json (or a +json type), got {0}")]
    UnsupportedMediaType(String),
    #[error("body is {size} bytes; the limit is {limit} (server.max_body_bytes)")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("body is empty; send the webhook's JSON payload")]
    EmptyBody,
    #[error("cannot read the request body: {0}")]
    BodyRead(String),
    #[error("the request body did not arrive within {0} s; send it at once")]
    BodyTimeout(u64),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("too many requests from source \"{0}\"; retry later")]
    RateLimited(String),
    #[error("the bridge is shutting down; retry against another replica or later")]
    Draining,
    #[error("the store is unavailable, nothing was stored; retry later")]
    StoreUnavailable(#[source] StoreError),
    #[error("the store failed, nothing was stored; retry later")]
    StoreFailed(#[source] StoreError),
    #[error("missing or wrong admin bearer token")]
    AdminUnauthorized,
    #[error("admin routes are disabled: set server.admin_token to enable them")]
    AdminDisabled,
    #[error("{0}")]
    NotFound(String),
    /// `/admin/history` without a well-formed `image` parameter.
    #[error("{0}")]
    InvalidImage(String),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => ApiError::StoreUnavailable(error),
            _ => ApiError::StoreFailed(error),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ApiError {
    /// The stable machine code of the answer (also the metrics `reason` label).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnknownSource(_) => "unknown_source",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::EmptyBody => "empty_body",
            ApiError::BodyRead(_) => "body_read_failed",
            ApiError::BodyTimeout(_) => "body_timeout",
            ApiError::Verify(error) => error.code(),
            ApiError::Payload(PayloadError::Json(_)) => "malformed_json",
            ApiError::Payload(PayloadError::Shape { .. }) => "invalid_payload",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Draining => "draining",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::StoreFailed(_) => "store_failed",
            ApiError::AdminUnauthorized => "unauthorized",
            ApiError::AdminDisabled => "admin_disabled",
            ApiError::NotFound(_) => "not_found",
            ApiError::InvalidImage(_) => "invalid_image",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnknownSource(_) | ApiError::AdminDisabled | ApiError::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::EmptyBody
            | ApiError::BodyRead(_)
            | ApiError::Payload(_)
            | ApiError::InvalidImage(_) => StatusCode::BAD_REQUEST,
            ApiError::Verify(_) | ApiError::AdminUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Draining | ApiError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::StoreFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Draining | ApiError::StoreUnavailable(_) => {
                response.insert_header(("Retry-After", "5"));
            }
            ApiError::RateLimited(_) => {
                response.insert_header(("Retry-After", "1"));
            }
            ApiError::AdminUnauthorized => {
                response.insert_header(("WWW-Authenticate", "Bearer"));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        })
    }
}
