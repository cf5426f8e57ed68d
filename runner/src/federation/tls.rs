//! TLS for the coordinator's QUIC endpoint: its identity (a certificate
//! made at start with rcgen, or loaded from files), and the workers' side,
//! which accepts exactly the certificate whose SHA-256 the token names.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest as _;

use super::token::hex;

/// The QUIC application protocol name; another version's is refused in
/// the handshake.
pub const ALPN: &[u8] = b"runner-federation/1";

/// The server name workers ask for (the certificate is pinned, so the
/// name itself proves nothing and needs no DNS).
pub const SERVER_NAME: &str = "runner-coordinator";

/// The coordinator's certificate and key.
pub struct Identity {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of `cert`.
    pub fingerprint: [u8; 32],
}

impl Identity {
    /// A fresh self-signed certificate.
    pub fn generate() -> Result<Self> {
        let cert = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .context("cannot make the coordinator's certificate")?;
        let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        Ok(Self::of(cert.cert.der().clone(), key))
    }

    /// The certificate and key in PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self> {
        use rustls::pki_types::pem::PemObject as _;
        let c = CertificateDer::from_pem_file(cert)
            .with_context(|| format!("cannot read a PEM certificate from {}", cert.display()))?;
        let k = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("cannot read a PEM private key from {}", key.display()))?;
        Ok(Self::of(c, k))
    }

    fn of(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Self {
        let fingerprint = fingerprint(&cert);
        Self {
            cert,
            key,
            fingerprint,
        }
    }

    /// The certificate and key as PEM text.
    pub fn pem(&self) -> Result<(String, String)> {
        use base64::Engine as _;
        let b64 = |der: &[u8]| {
            let text = base64::engine::general_purpose::STANDARD.encode(der);
            text.as_bytes()
                .chunks(64)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let key = match &self.key {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der(),
            _ => return Err(anyhow!("only PKCS#8 keys can be written")),
        };
        Ok((
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                b64(&self.cert)
            ),
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                b64(key)
            ),
        ))
    }

    /// The coordinator's QUIC server configuration.
    pub fn server_config(&self) -> Result<quinn::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3")?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .context("the coordinator's certificate")?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| anyhow!("QUIC TLS configuration: {e}"))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport()));
        Ok(config)
    }
}

/// SHA-256 of a certificate's DER bytes.
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    sha2::Sha256::digest(cert.as_ref()).into()
}

/// QUIC settings for both sides: keep-alives so a quiet connection stays
/// open, and an idle timeout that notices a dead peer.
fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(15)) {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// A worker's QUIC client configuration: it trusts exactly the
/// certificate with SHA-256 `fingerprint`.
pub fn client_config(fingerprint: [u8; 32]) -> Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            fingerprint,
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| anyhow!("QUIC TLS configuration: {e}"))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport()));
    Ok(config)
}

/// Accepts the one certificate whose fingerprint the token carries (and
/// checks that the peer holds its key, through the handshake signature).
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity);
        if got == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the coordinator's certificate has fingerprint {}, not the token's {}: wrong token, or not the coordinator that printed it",
                hex(&got),
                hex(&self.fingerprint)
            )))
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
