//! Seal status and unsealing. Unsealing needs no login: holding a share is the credential, and the
//! shares' checksum and keyring id make a mistyped or foreign share fail on its own.

use super::App;
use crate::error::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use cofre_core::audit::NewAuditEntry;
use cofre_crypto::{CryptoError, SealKind, UnsealOutcome};
use cofre_proto::SealStatus;

impl App {
    pub fn seal_status(&self) -> SealStatus {
        let (kind, threshold, shares) = match self.keyring.seal {
            SealKind::KeyFile => ("key_file", None, None),
            SealKind::Shamir { threshold, shares } => ("shamir", Some(threshold), Some(shares)),
        };
        SealStatus {
            sealed: self.is_sealed(),
            seal_kind: kind.to_owned(),
            keyring_id: self.keyring.keyring_id.clone(),
            threshold,
            shares,
            progress: self.unseal_lock().map(|p| p.have()).unwrap_or(0),
        }
    }

    fn unseal_lock(&self) -> Result<std::sync::MutexGuard<'_, cofre_crypto::UnsealProgress>> {
        self.unseal
            .lock()
            .map_err(|_| Error::internal("unsealing", "lock poisoned"))
    }

    /// Opens the keyring from DATA_DIR/master.key (the embedded default).
    pub fn unseal_from_key_file(&self) -> Result<()> {
        let key = self
            .keyring
            .unseal_with_key_file(&self.config.data_dir)
            .map_err(|e| Error::new(ErrorKind::Internal, ErrorCode::UnsealFailed, e.to_string()))?;
        self.set_master(key);
        Ok(())
    }

    /// Takes one share. Every attempt is audited, without the share.
    pub async fn unseal(&self, share: &str, source: &str) -> Result<SealStatus> {
        if !self.is_sealed() {
            return Ok(self.seal_status());
        }
        let result = {
            let mut progress = self.unseal_lock()?;
            progress.submit(&self.keyring, share)
        };
        let object = format!("keyring:{}", self.keyring.keyring_id);
        match result {
            Ok(UnsealOutcome::NeedMore { have, need }) => {
                self.record(
                    NewAuditEntry::new("anonymous", "seal.share_accepted", object)
                        .detail("have", have)
                        .detail("need", need)
                        .detail("source", source),
                )
                .await?;
                Ok(self.seal_status())
            }
            Ok(UnsealOutcome::Unsealed(key)) => {
                self.set_master(key);
                if let Err(e) = self.start_signing_audit_head().await {
                    tracing::error!(error = %e, "cannot sign the audit chain head");
                }
                self.record(
                    NewAuditEntry::new("anonymous", "seal.unsealed", object)
                        .detail("source", source),
                )
                .await?;
                Ok(self.seal_status())
            }
            Err(e) => {
                self.record(
                    NewAuditEntry::new("anonymous", "seal.share_refused", object)
                        .outcome("denied")
                        .detail("why", e.to_string())
                        .detail("source", source),
                )
                .await?;
                let code = match e {
                    CryptoError::ShareDuplicate => ErrorCode::ShareDuplicate,
                    CryptoError::ShareWrongKeyring => ErrorCode::ShareWrongKeyring,
                    CryptoError::SharesDoNotOpen => ErrorCode::SharesDoNotOpen,
                    _ => ErrorCode::ShareInvalid,
                };
                Err(Error::new(ErrorKind::BadRequest, code, e.to_string()).with_field("share"))
            }
        }
    }
}
