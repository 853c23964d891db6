//! Request extractors that turn every malformed input into an [`Error`] naming the field, never a
//! panic and never axum's plain-text rejections.

use crate::error::{Error, ErrorCode, ErrorKind};
use crate::services::Principal;
use crate::AppState;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// A JSON body, parsed with the path of the first offending field.
pub struct JsonBody<T>(pub T);

/// Pulls the field name out of serde's "unknown field `x`" / "missing field `x`" messages, which
/// report the containing object as the path.
fn field_from_message(msg: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = msg.split(marker).nth(1) {
            return rest.split('`').next().map(str::to_owned);
        }
    }
    None
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.inner();
            let message = inner.to_string();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let mut field = if path == "." { None } else { Some(path) };
                    if message.starts_with("unknown field") || message.starts_with("missing field")
                    {
                        let name = field_from_message(&message);
                        field = match (field, name) {
                            // serde_path_to_error already ends the path with an unknown
                            // field's name, but stops at the parent for a missing one.
                            (Some(p), Some(n)) if p == n || p.ends_with(&format!(".{n}")) => {
                                Some(p)
                            }
                            (Some(p), Some(n)) => Some(format!("{p}.{n}")),
                            (None, n) => n,
                            (p, None) => p,
                        };
                    }
                    let shown = field.clone().unwrap_or_else(|| "body".into());
                    let mut e = Error::new(
                        ErrorKind::BadRequest,
                        ErrorCode::InvalidField,
                        format!("{shown}: {}", strip_position(&message)),
                    );
                    e.field = field;
                    Err(e)
                }
                _ => Err(Error::new(
                    ErrorKind::BadRequest,
                    ErrorCode::MalformedJson,
                    format!("the body is not valid JSON: {}", message),
                )),
            }
        }
    }
}

/// serde_json appends " at line 1 column 17"; the field name is more useful than the column.
fn strip_position(msg: &str) -> &str {
    msg.rsplit_once(" at line ").map_or(msg, |(head, _)| head)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(Error::new(
                ErrorKind::UnsupportedMediaType,
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) => Error::new(
                ErrorKind::TooLarge,
                ErrorCode::BodyTooLarge,
                format!(
                    "the body is larger than {} bytes (or was cut off)",
                    cofre_proto::MAX_BODY_BYTES
                ),
            ),
            other => Error::new(ErrorKind::BadRequest, ErrorCode::BadBody, other.body_text()),
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Query parameters, with unknown or malformed ones named.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded_like(query).map(QueryParams)
    }
}

/// Parses a query string (without the `?`) as [`QueryParams`] does; public for the fuzz targets.
pub fn serde_urlencoded_like<T: DeserializeOwned>(query: &str) -> Result<T, Error> {
    // axum's own Query extractor wraps serde_urlencoded; reuse it through its public API and
    // rewrite the rejection into our error shape.
    let uri: axum::http::Uri = format!("/?{query}").parse().map_err(|_| {
        Error::new(
            ErrorKind::BadRequest,
            ErrorCode::InvalidQuery,
            "the query string is malformed",
        )
    })?;
    axum::extract::Query::<T>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| {
            let text = e.body_text();
            // "Failed to deserialize query string: limit: invalid digit found in string"
            let field = field_from_message(&text).or_else(|| {
                text.strip_prefix("Failed to deserialize query string: ")
                    .and_then(|rest| rest.split_once(": "))
                    .map(|(name, _)| name.to_owned())
                    .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            });
            let mut err = Error::new(ErrorKind::BadRequest, ErrorCode::InvalidQuery, text);
            err.field = field;
            err
        })
}

/// The authenticated caller, from `Authorization: Bearer TOKEN`.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unauthorized,
                    ErrorCode::Unauthenticated,
                    "missing bearer token: log in with `cofre login`",
                )
            })?;
        let who = state.app.accounts().authenticate(token).await?;
        // A support user's every call under a grant is in the trail, for `support activity`
        // (the path as the client sent it, not as the nested router sees it).
        let path = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or(parts.uri.path(), |u| u.0.path());
        state
            .app
            .accounts()
            .record_support_call(&who, parts.method.as_str(), &format!("api:{path}"))
            .await?;
        // Where the request came from, after the network gate put the real client here.
        Ok(Auth(match parts.extensions.get::<PeerAddr>() {
            Some(p) => who.with_source(p.0.ip()),
            None => who,
        }))
    }
}

/// The client's address, for audit entries.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

pub struct Source(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Source(parts.extensions.get::<PeerAddr>().map_or_else(
            || "unknown".to_owned(),
            |p| p.0.ip().to_string(),
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use cofre_proto::CreateUserRequest;

    #[test]
    fn names_unknown_field() {
        let e = parse_json::<CreateUserRequest>(br#"{"username":"a","role":"user","colour":1}"#)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("colour"));
    }

    #[test]
    fn names_missing_field() {
        let e = parse_json::<CreateUserRequest>(br#"{"username":"a"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("role"));
    }

    #[test]
    fn names_wrong_type_deep() {
        let e = parse_json::<CreateUserRequest>(br#"{"username":"a","role":"user","groups":[1]}"#)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("groups[0]"));
        assert_eq!(e.code, ErrorCode::InvalidField);
    }

    #[test]
    fn malformed_json() {
        let e = parse_json::<CreateUserRequest>(b"{\"username\":").unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedJson);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_json::<CreateUserRequest>(&bytes);
            let _ = parse_json::<cofre_proto::CreatePolicyRequest>(&bytes);
            let _ = parse_json::<cofre_proto::RevealRequest>(&bytes);
        }

        #[test]
        fn json_like_text_never_panics(s in r#"\{("[a-z_]{0,10}":(\[?"?[a-z0-9 ]{0,8}"?\]?|null|-?[0-9]{1,20}|true),?){0,5}\}"#) {
            let _ = parse_json::<CreateUserRequest>(s.as_bytes());
            let _ = parse_json::<cofre_proto::CreateTargetRequest>(s.as_bytes());
            let _ = parse_json::<cofre_proto::LoginRequest>(s.as_bytes());
        }
    }
}
