//! The HTTPS certificate: generated self-signed at first start (kept in DATA_DIR/tls), or one the
//! operator put there. Clients pin it by the SHA-256 fingerprint that the server prints at start.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(String),
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("TLS configuration refused: {0}")]
    Config(String),
    #[error("cannot write the certificate: {0}")]
    Write(String),
}

pub struct TlsMaterial {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), lowercase hex.
    pub fingerprint: String,
    pub generated: bool,
}

pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// Loads DATA_DIR/tls/{cert,key}.pem, generating a self-signed pair for localhost first if absent.
pub fn load_or_generate(data_dir: &Path) -> Result<TlsMaterial, TlsError> {
    load_or_generate_in(&data_dir.join("tls"))
}

/// As [`load_or_generate`] for a certificate of its own in `dir` (the external listener's
/// `DATA_DIR/tls-external`, which an operator replaces with a publicly trusted one).
pub fn load_or_generate_in(dir: &Path) -> Result<TlsMaterial, TlsError> {
    let dir = dir.to_path_buf();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let mut generated = false;
    if !cert_path.exists() {
        generate(&dir)?;
        generated = true;
    }
    let read_err = |path: &Path, e: &dyn std::fmt::Display| TlsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| read_err(&cert_path, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_err(&cert_path, &e))?;
    let leaf = certs
        .first()
        .ok_or_else(|| read_err(&cert_path, &"no certificate in the file"))?;
    let fingerprint = fingerprint(leaf.as_ref());
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| read_err(&key_path, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        config: Arc::new(config),
        fingerprint,
        generated,
    })
}

/// How long a generated certificate is valid.
pub const VALIDITY_DAYS: i64 = 825;

fn generate(dir: &Path) -> Result<(), TlsError> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() && cofre_core::names::check_host("host", host).is_ok() {
            names.push(host.to_owned());
        }
    }
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cofre self-signed");
    // rcgen's default runs from 1975 to 4096; a certificate should say when it stops being
    // trusted. 825 days is the longest the CA/Browser Forum ever allowed; clients pin the
    // fingerprint, so the end is when an operator must put a new one in DATA_DIR/tls.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| TlsError::Write(e.to_string()))?;
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    cofre_crypto::files::write_private_file(&dir.join("key.pem"), key_pem.as_bytes())
        .map_err(|e| TlsError::Write(e.to_string()))?;
    cofre_crypto::files::write_private_file(&dir.join("cert.pem"), cert.pem().as_bytes())
        .map_err(|e| TlsError::Write(e.to_string()))?;
    Ok(())
}
