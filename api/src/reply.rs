//! Replies in Azure Batch's exact shapes: entities with `odata.metadata`, `eTag` and
//! `lastModified` (and the `ETag`, `Last-Modified` headers), lists with `odata.nextLink`, and
//! errors as `{"code", "message": {"lang", "value"}, "values"}` with Azure's codes.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use drover_core::Error;
use serde_json::{json, Value};
use sha2::Digest;

/// An error as Azure Batch answers it.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) values: Vec<(String, String)>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), values: Vec::new() }
    }

    /// A request that is not signed as the account's keys would sign it.
    pub(crate) fn auth(why: &str) -> Self {
        let message = "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.";
        ApiError {
            values: vec![("AuthenticationErrorDetail".into(), why.into())],
            ..Self::new(StatusCode::FORBIDDEN, "AuthenticationFailed", message)
        }
    }

    /// A body or parameter that is not valid: the reason names the field.
    pub(crate) fn invalid(why: impl Into<String>) -> Self {
        let why = why.into();
        ApiError {
            values: vec![("Reason".into(), why.clone())],
            ..Self::new(StatusCode::BAD_REQUEST, "InvalidRequestBody", format!("The request body is invalid: {why}"))
        }
    }

    pub(crate) fn not_supported(what: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "FeatureNotSupported",
            format!("{what} is an Azure Batch feature drover does not provide"),
        )
    }

    /// The body of one failed task of an `addtaskcollection`.
    pub(crate) fn body(&self) -> Value {
        let values: Vec<Value> = self.values.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        json!({"code": self.code, "message": {"lang": "en-US", "value": self.message}, "values": values})
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let kind_code = |kind: &str, missing: bool| match (kind, missing) {
            ("pool", true) => "PoolNotFound",
            ("pool", false) => "PoolExists",
            ("job", true) => "JobNotFound",
            ("job", false) => "JobExists",
            ("task", true) => "TaskNotFound",
            ("task", false) => "TaskExists",
            ("job schedule", true) => "JobScheduleNotFound",
            ("job schedule", false) => "JobScheduleExists",
            ("node", true) => "NodeNotFound",
            ("file", true) => "FileNotFound",
            (_, true) => "NotFound",
            (_, false) => "Conflict",
        };
        match &e {
            Error::NotFound { kind, .. } => Self::new(StatusCode::NOT_FOUND, kind_code(kind, true), e.to_string()),
            Error::Conflict { kind, .. } => Self::new(StatusCode::CONFLICT, kind_code(kind, false), e.to_string()),
            Error::Invalid(why) => Self::invalid(why.clone()),
            Error::State(why) => Self::new(StatusCode::CONFLICT, "OperationInvalidForCurrentState", why.clone()),
            e if e.is_transient() => {
                tracing::warn!(error = %e, "a request found a service unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServerBusy", "The server is busy; try again.")
            }
            e => {
                tracing::error!(error = %e, "a request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "The server encountered an internal error.",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::NOT_MODIFIED {
            return self.status.into_response();
        }
        let mut body = self.body();
        body["odata.metadata"] = json!("$metadata#Microsoft.Azure.Batch.Protocol.Entities.Container.errors/@Element");
        let mut response = (self.status, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json;odata=minimalmetadata"));
        response
    }
}

pub(crate) type Reply = Result<Response, ApiError>;

/// An entity's ETag: it changes whenever what the entity shows changes.
pub(crate) fn etag(entity: &Value) -> String {
    let digest = sha2::Sha256::digest(entity.to_string().as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02X}")).collect();
    format!("0x{hex}")
}

/// When the entity last changed, as Azure's `lastModified` (its last state transition).
fn last_modified(entity: &Value) -> String {
    ["stateTransitionTime", "creationTime"]
        .iter()
        .find_map(|k| entity.get(*k).and_then(Value::as_str))
        .map_or_else(|| drover_core::model::rfc3339(drover_core::model::now_ms()), str::to_string)
}

/// `entity` (a serialised CloudPool, CloudJob, ...) as Azure returns it, with its ETag.
pub(crate) fn entity(base: &str, set: &str, mut entity: Value) -> Value {
    let tag = etag(&entity);
    let modified = last_modified(&entity);
    if let Value::Object(members) = &mut entity {
        members.insert("odata.metadata".into(), json!(format!("{base}/$metadata#{set}/@Element")));
        members.insert("eTag".into(), json!(tag));
        members.insert("lastModified".into(), json!(modified));
    }
    entity
}

/// A 200 with `body` and the entity headers.
pub(crate) fn ok_entity(body: Value) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(tag) = body.get("eTag").and_then(Value::as_str).and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert("etag", tag);
    }
    if let Some(when) = body.get("lastModified").and_then(Value::as_str).and_then(http_date) {
        headers.insert("last-modified", when);
    }
    json_response(StatusCode::OK, headers, body)
}

pub(crate) fn json_response(status: StatusCode, mut headers: HeaderMap, body: Value) -> Response {
    headers.insert("content-type", HeaderValue::from_static("application/json;odata=minimalmetadata"));
    (status, headers, body.to_string()).into_response()
}

/// A create's answer: 201, no body, where the entity is.
pub(crate) fn created(base: &str, path: &str) -> Response {
    let mut headers = HeaderMap::new();
    let location = format!("{base}{path}");
    for name in ["location", "dataserviceid"] {
        if let Ok(v) = HeaderValue::from_str(&location) {
            headers.insert(name, v);
        }
    }
    (StatusCode::CREATED, headers).into_response()
}

/// An RFC 3339 time as an HTTP date.
pub(crate) fn http_date(rfc3339: &str) -> Option<HeaderValue> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    HeaderValue::from_str(&t.with_timezone(&chrono::Utc).format("%a, %d %b %Y %H:%M:%S GMT").to_string()).ok()
}
