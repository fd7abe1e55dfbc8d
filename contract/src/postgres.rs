//! How smartregion connects to PostgreSQL: `sslmode` with libpq's meanings, TLS with
//! rustls. The operator's admin pool and ingest's writer connections use the same.
//!
//! Pure configuration: builds connectors, opens no connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::ValueEnum;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sslmode verify-full needs a CA bundle (a PEM file)")]
    NoCaFile,
    #[error("failed to read the CA bundle {0}")]
    ReadCa(PathBuf, #[source] rustls::pki_types::pem::Error),
    #[error("the CA bundle {0} holds no usable certificate")]
    EmptyCa(PathBuf),
    #[error("failed to set up TLS")]
    Tls(#[source] rustls::Error),
}

/// How the connection to the database is protected, with libpq's meaning of each value.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[value(rename_all = "kebab-case")]
pub enum SslMode {
    /// No TLS.
    #[default]
    Disable,
    /// TLS, without checking who the server is (protects against eavesdropping only).
    Require,
    /// TLS, and the server's certificate must be signed by the CA bundle and name the host.
    VerifyFull,
}

impl SslMode {
    /// The value of `sslmode` as libpq-based clients spell it, for the tenants' Secrets.
    pub fn as_libpq(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A tokio-postgres connector for `mode`: `None` for `disable`.
pub fn connector(
    mode: SslMode,
    ca_file: Option<&Path>,
) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, Error> {
    match mode {
        SslMode::Disable => Ok(None),
        mode => Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(
            tls_config(mode, ca_file)?,
        ))),
    }
}

pub fn tls_config(mode: SslMode, ca_file: Option<&Path>) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?;
    let config = match mode {
        SslMode::VerifyFull => {
            let path = ca_file.ok_or(Error::NoCaFile)?;
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_file_iter(path)
                .map_err(|source| Error::ReadCa(path.into(), source))?
            {
                let certificate =
                    certificate.map_err(|source| Error::ReadCa(path.into(), source))?;
                roots.add(certificate).map_err(Error::Tls)?;
            }
            if roots.is_empty() {
                return Err(Error::EmptyCa(path.into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        SslMode::Require | SslMode::Disable => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// libpq's `sslmode=require`: the channel is encrypted and the handshake signatures are
/// checked, but the certificate's issuer and name are not.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_full_needs_a_ca_bundle_with_a_certificate() {
        assert!(matches!(
            connector(SslMode::VerifyFull, None).err().unwrap(),
            Error::NoCaFile
        ));
        let empty =
            std::env::temp_dir().join(format!("smartregion-empty-ca-{}", std::process::id()));
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            connector(SslMode::VerifyFull, Some(&empty)).err().unwrap(),
            Error::EmptyCa(_)
        ));
        std::fs::remove_file(&empty).unwrap();
        assert!(connector(SslMode::Disable, None).unwrap().is_none());
        assert!(connector(SslMode::Require, None).unwrap().is_some());
    }

    #[test]
    fn modes_are_spelled_as_libpq_spells_them() {
        for mode in [SslMode::Disable, SslMode::Require, SslMode::VerifyFull] {
            assert_eq!(SslMode::from_str(mode.as_libpq(), false), Ok(mode));
        }
    }
}
