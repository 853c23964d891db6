//! Network policy: which networks each listener accepts, and the gate every request passes.
//! Handlers only translate; the rules live in `services::network`.

use super::governance::applied;
use super::ApiResult;
use crate::error::Error;
use crate::extract::{Auth, JsonBody, PeerAddr, Source};
use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cofre_core::network::Listener;
use cofre_proto::*;

#[utoipa::path(get, path = "/api/v1/network", security(("bearer" = [])),
    responses((status = 200, body = NetworkPolicyInfo), (status = 403, body = ErrorBody)))]
pub(super) async fn show(
    State(state): State<AppState>,
    Auth(who): Auth,
    Source(source): Source,
) -> ApiResult<NetworkPolicyInfo> {
    Ok(Json(
        state.app.orbit().get_network_policy(&who, &source).await?,
    ))
}

/// Narrowing applies at once (200); a change that lets in more waits for a second admin (202).
/// A change that refuses the caller's own address on the API answers 409 `network_self_lockout`
/// unless `force`.
#[utoipa::path(put, path = "/api/v1/network", security(("bearer" = [])), request_body = SetNetworkRequest,
    responses((status = 200, body = NetworkPolicyInfo), (status = 202, body = HeldResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn set(
    State(state): State<AppState>,
    Auth(who): Auth,
    Source(source): Source,
    JsonBody(req): JsonBody<SetNetworkRequest>,
) -> Result<Response, Error> {
    Ok(applied(
        state
            .app
            .orbit()
            .set_network_policy(&who, &source, &req)
            .await?,
    ))
}

/// Every request: the client's address (from a trusted proxy, the rightmost untrusted hop of
/// `X-Forwarded-For`; from anyone else the header is ignored) becomes the request's `PeerAddr`,
/// which login, lockout and audit read, and the API's allow-list judges it: outside, 403
/// `network_refused` before anything else is done.
pub(super) async fn gate(
    State(state): State<AppState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(PeerAddr(peer)) = req.extensions().get::<PeerAddr>().copied() else {
        // In-process tests of the router: no listener, no address to judge.
        return next.run(req).await;
    };
    let values: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let client = match state
        .app
        .admit_forwarded(Listener::Api, peer.ip(), &values)
        .await
    {
        Ok(c) => c,
        Err(e) => return Error::from(e).into_response(),
    };
    req.extensions_mut()
        .insert(PeerAddr(std::net::SocketAddr::new(client, peer.port())));
    next.run(req).await
}
