//! Invitations for third parties: create, list, show, revoke. Handlers only translate; the rules
//! live in `services::invites`. The invitee's own pages are on the external listener
//! (`cofre_console::external`), never here.

use super::{applied, ApiResult};
use crate::error::Error;
use crate::extract::{Auth, JsonBody, QueryParams};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cofre_app::services::governance::Applied;
use cofre_app::services::invites::Invited;
#[allow(unused_imports)] // named by the OpenAPI attribute
use cofre_proto::InvitationPending;
use cofre_proto::{
    DecideInvitationSessionRequest, ErrorBody, InvitationInfo, InvitationRequested,
    InvitationSessionInfo, InviteRequest, Page, PageQuery,
};

/// Invites a third party: the one-time link goes to its address by e-mail (never in this
/// answer). An admin's: 202 with the change request when it waits for a second admin (dual
/// control). A user's, where a policy gives it `invite` (and `session`) on every target for the
/// whole window: kept at once (`allow`), or 202 with the access request when the policy wants
/// approval; 403 `policy_denied` naming the target otherwise. The link is made and sent only
/// once the invitation is kept.
#[utoipa::path(post, path = "/api/v1/invitations", security(("bearer" = [])),
    request_body = InviteRequest,
    responses((status = 200, body = InvitationInfo), (status = 202, body = InvitationPending), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn create(
    State(state): State<AppState>,
    Auth(who): Auth,
    JsonBody(req): JsonBody<InviteRequest>,
) -> Result<Response, Error> {
    Ok(
        match state.app.approvals().create_invitation(&who, &req).await? {
            Invited::Done(i) => applied(Applied::Done(i)),
            Invited::Held(c) => applied(Applied::<InvitationInfo>::Held(c)),
            Invited::Requested(request) => (
                StatusCode::ACCEPTED,
                Json(InvitationRequested {
                    requested: true,
                    request,
                }),
            )
                .into_response(),
        },
    )
}

/// Every invitation and its status (admins and auditors).
#[utoipa::path(get, path = "/api/v1/invitations", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<InvitationInfo>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
    QueryParams(q): QueryParams<PageQuery>,
) -> ApiResult<Page<InvitationInfo>> {
    Ok(Json(
        state
            .app
            .approvals()
            .list_invitations(&who, q.limit, q.cursor.as_deref())
            .await?,
    ))
}

/// One invitation.
#[utoipa::path(get, path = "/api/v1/invitations/{id}", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = InvitationInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn show(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<InvitationInfo> {
    Ok(Json(state.app.approvals().get_invitation(&who, &id).await?))
}

/// Ends an invitation now: its link and login are refused and its live sessions end.
#[utoipa::path(post, path = "/api/v1/invitations/{id}/revoke", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = InvitationInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn revoke(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<InvitationInfo> {
    Ok(Json(
        state.app.approvals().revoke_invitation(&who, &id).await?,
    ))
}

/// An admin (the inviter is one) approves a session an invitee waits for.
#[utoipa::path(post, path = "/api/v1/invitations/{id}/sessions/{ask}/approve", security(("bearer" = [])),
    params(("id" = String, Path), ("ask" = String, Path)), request_body = DecideInvitationSessionRequest,
    responses((status = 200, body = InvitationSessionInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn approve_session(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((id, ask)): Path<(String, String)>,
    JsonBody(req): JsonBody<DecideInvitationSessionRequest>,
) -> ApiResult<InvitationSessionInfo> {
    Ok(Json(
        state
            .app
            .approvals()
            .decide_invitation_session(&who, &id, &ask, true, req.comment.as_deref())
            .await?,
    ))
}

/// An admin denies a session an invitee waits for, saying why: the invitee's terminal ends.
#[utoipa::path(post, path = "/api/v1/invitations/{id}/sessions/{ask}/deny", security(("bearer" = [])),
    params(("id" = String, Path), ("ask" = String, Path)), request_body = DecideInvitationSessionRequest,
    responses((status = 200, body = InvitationSessionInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn deny_session(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((id, ask)): Path<(String, String)>,
    JsonBody(req): JsonBody<DecideInvitationSessionRequest>,
) -> ApiResult<InvitationSessionInfo> {
    Ok(Json(
        state
            .app
            .approvals()
            .decide_invitation_session(&who, &id, &ask, false, req.comment.as_deref())
            .await?,
    ))
}
