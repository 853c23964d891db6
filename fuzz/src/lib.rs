//! What the fuzz targets share: the API request parsers by index (the `api_requests` target
//! and the seed generator agree on it through [`PARSERS`]).

use cofre_proto::requests::{CreateAccessRequest, DecideRequest, RequestListQuery, RevokeRequest};
use cofre_proto::*;
use cofre_http::extract::{parse_json, serde_urlencoded_like};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn body<T: DeserializeOwned + Serialize>(bytes: &[u8]) {
    if let Ok(v) = parse_json::<T>(bytes) {
        let again = serde_json::to_vec(&v).expect("a parsed request serialises");
        if let Err(e) = parse_json::<T>(&again) {
            panic!(
                "{} re-serialised does not parse: {} ({})",
                std::any::type_name::<T>(),
                e.message,
                String::from_utf8_lossy(&again)
            );
        }
    }
}

fn query<T: DeserializeOwned>(bytes: &[u8]) {
    let _ = serde_urlencoded_like::<T>(&String::from_utf8_lossy(bytes));
}

/// Every type a handler takes as `JsonBody<T>` or `QueryParams<T>`, in a fixed order: the
/// corpus's first bytes index this list (examples/make_seeds.rs writes one seed per entry).
pub const PARSERS: &[(&str, fn(&[u8]))] = &[
    ("UnsealRequest", body::<UnsealRequest>),
    ("LoginRequest", body::<LoginRequest>),
    ("ChangePasswordRequest", body::<ChangePasswordRequest>),
    ("TotpConfirmRequest", body::<TotpConfirmRequest>),
    ("CreateUserRequest", body::<CreateUserRequest>),
    ("SetEmailRequest", body::<SetEmailRequest>),
    ("CreateGroupRequest", body::<CreateGroupRequest>),
    ("GroupMemberRequest", body::<GroupMemberRequest>),
    ("CreateTargetRequest", body::<CreateTargetRequest>),
    ("CreateCredentialRequest", body::<CreateCredentialRequest>),
    ("UpdateCredentialRequest", body::<UpdateCredentialRequest>),
    ("RevealRequest", body::<RevealRequest>),
    ("CreatePolicyRequest", body::<CreatePolicyRequest>),
    ("AddSshKeyRequest", body::<AddSshKeyRequest>),
    ("KillSessionRequest", body::<KillSessionRequest>),
    ("CreateAccessRequest", body::<CreateAccessRequest>),
    ("DecideRequest", body::<DecideRequest>),
    ("RevokeRequest", body::<RevokeRequest>),
    ("CeremonyRequest", body::<CeremonyRequest>),
    ("NewBackupTargetRequest", body::<NewBackupTargetRequest>),
    ("NewBackupJobRequest", body::<NewBackupJobRequest>),
    ("CreateSnapshotRequest", body::<CreateSnapshotRequest>),
    ("PruneSnapshotsRequest", body::<PruneSnapshotsRequest>),
    ("PageQuery", query::<PageQuery>),
    ("SessionQuery", query::<SessionQuery>),
    ("RequestListQuery", query::<RequestListQuery>),
    ("SetPasswordPolicyRequest", body::<SetPasswordPolicyRequest>),
    ("RotateRequest", body::<RotateRequest>),
    ("SetRotationRequest", body::<SetRotationRequest>),
    ("RotationListQuery", query::<RotationListQuery>),
    ("NewSiemRequest", body::<NewSiemRequest>),
    ("LockSessionRequest", body::<LockSessionRequest>),
    ("EmergencyRequest", body::<EmergencyRequest>),
    ("LiftLockdownRequest", body::<LiftLockdownRequest>),
    ("SetNetworkRequest", body::<SetNetworkRequest>),
];
