//! TLS for the coordinator's QUIC endpoint: its identity (a certificate
//! made at start with rcgen, or loaded from files), and the workers' side,
//! which accepts exactly the certificate whose SHA-256 the token names.
//! Or, for a fleet with its own PKI, a CA both sides' certificates are
//! signed by: the coordinator then admits only workers whose client
//! certificate that CA signed, and workers check the coordinator's against
//! it (and its name).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
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
    /// Certificates between it and a CA, if the file had them.
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of `cert`.
    pub fingerprint: [u8; 32],
    /// With a CA: only workers whose client certificate it signed are
    /// admitted (the token's secret is then not needed).
    pub client_ca: Option<Arc<RootCertStore>>,
}

/// How a worker trusts the coordinator (and proves who it is).
pub enum Trust {
    /// The certificate whose SHA-256 the token carries.
    Pinned([u8; 32]),
    /// Certificates signed by a CA; the worker shows its own.
    Ca {
        /// The CA's certificates.
        roots: Arc<RootCertStore>,
        /// The worker's certificate (and chain).
        chain: Vec<CertificateDer<'static>>,
        /// Its key.
        key: PrivateKeyDer<'static>,
    },
}

impl Trust {
    /// A CA's certificate, and this worker's certificate and key, from
    /// PEM files.
    pub fn ca(ca: &Path, cert: &Path, key: &Path) -> Result<Self> {
        Ok(Self::Ca {
            roots: roots(ca)?,
            chain: certs(cert)?,
            key: private_key(key)?,
        })
    }

    /// The name the coordinator's certificate must have: with a CA, the
    /// host workers connect to (a DNS name or an IP address); pinned, any.
    pub fn server_name(&self, coordinator: &str) -> String {
        match self {
            Self::Pinned(_) => SERVER_NAME.to_owned(),
            Self::Ca { .. } => {
                let host = coordinator.rsplit_once(':').map_or(coordinator, |(h, _)| h);
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            }
        }
    }
}

/// Every certificate in a PEM file.
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read PEM certificates from {}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    use rustls::pki_types::pem::PemObject as _;
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a PEM private key from {}", path.display()))
}

/// A CA file's certificates as trust roots.
pub fn roots(path: &Path) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store
            .add(c)
            .with_context(|| format!("{} is not a usable CA certificate", path.display()))?;
    }
    Ok(Arc::new(store))
}

impl Identity {
    /// A fresh self-signed certificate.
    pub fn generate() -> Result<Self> {
        let cert = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .context("cannot make the coordinator's certificate")?;
        let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        Ok(Self::of(cert.cert.der().clone(), key))
    }

    /// The certificate (and chain) and key in PEM files; with `ca`, only
    /// workers with a certificate it signed are admitted.
    pub fn load(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<Self> {
        let mut chain = certs(cert)?;
        let first = chain.remove(0);
        let mut id = Self::of(first, private_key(key)?);
        id.chain = chain;
        id.client_ca = ca.map(roots).transpose()?;
        Ok(id)
    }

    fn of(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Self {
        let fingerprint = fingerprint(&cert);
        Self {
            cert,
            chain: Vec::new(),
            key,
            fingerprint,
            client_ca: None,
        }
    }

    /// The certificate and key as PEM text.
    pub fn pem(&self) -> Result<(String, String)> {
        let key = match &self.key {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der(),
            _ => return Err(anyhow!("only PKCS#8 keys can be written")),
        };
        Ok((pem("CERTIFICATE", &self.cert), pem("PRIVATE KEY", key)))
    }

    /// The coordinator's QUIC server configuration.
    pub fn server_config(&self) -> Result<quinn::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3")?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(roots) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
                    .build()
                    .context("the CA for workers' certificates")?,
            ),
        };
        let mut chain = vec![self.cert.clone()];
        chain.extend(self.chain.iter().cloned());
        let mut tls = builder
            .with_single_cert(chain, self.key.clone_key())
            .context("the coordinator's certificate")?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| anyhow!("QUIC TLS configuration: {e}"))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport()));
        Ok(config)
    }
}

/// A CA made here and the certificates it signed, as PEM files.
pub struct CaFiles {
    /// (file name, contents): `ca.crt`, `ca.key`, `coordinator.crt`,
    /// `coordinator.key`, then the workers'.
    pub files: Vec<(String, String)>,
}

impl CaFiles {
    /// A CA; a coordinator certificate for `hosts` (DNS names or IP
    /// addresses); `workers` worker certificates.
    pub fn generate(hosts: &[String], workers: u32) -> Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "runner federation CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().context("cannot make the CA's key")?;
        let ca_pem = pem("PRIVATE KEY", &ca_key.serialize_der());
        let ca = CertifiedIssuer::self_signed(params, ca_key).context("cannot make the CA")?;
        let mut files = vec![
            ("ca.crt".to_owned(), pem("CERTIFICATE", ca.der())),
            ("ca.key".to_owned(), ca_pem),
        ];
        let mut leaf = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut p = CertificateParams::new(sans)
                .with_context(|| format!("{name}: a host name is not valid"))?;
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = vec![usage];
            let key = KeyPair::generate().context("cannot make a key")?;
            let cert = p
                .signed_by(&key, &ca)
                .with_context(|| format!("cannot sign {name}'s certificate"))?;
            files.push((format!("{name}.crt"), pem("CERTIFICATE", cert.der())));
            files.push((
                format!("{name}.key"),
                pem("PRIVATE KEY", &key.serialize_der()),
            ));
            Ok::<_, anyhow::Error>(())
        };
        leaf(
            "coordinator",
            hosts.to_vec(),
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        for i in 1..=workers {
            let name = if workers == 1 {
                "worker".to_owned()
            } else {
                format!("worker-{i}")
            };
            leaf(
                &name,
                vec![name.clone()],
                ExtendedKeyUsagePurpose::ClientAuth,
            )?;
        }
        Ok(Self { files })
    }
}

/// DER bytes as a PEM block.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
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
/// certificate the token names, or those its CA signed.
pub fn client_config(trust: &Trust) -> Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?;
    let mut tls = match trust {
        Trust::Pinned(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint: *fingerprint,
                provider,
            }))
            .with_no_client_auth(),
        Trust::Ca { roots, chain, key } => builder
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .context("this worker's certificate and key")?,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_a_ca_the_name_checked_is_the_host_joined() {
        let dir = tempfile::tempdir().unwrap();
        let files = CaFiles::generate(&["coord.example".into()], 1).unwrap();
        for (name, text) in &files.files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let p = |f: &str| dir.path().join(f);
        let trust = Trust::ca(&p("ca.crt"), &p("worker.crt"), &p("worker.key")).unwrap();
        assert_eq!(trust.server_name("coord.example:7676"), "coord.example");
        assert_eq!(trust.server_name("[::1]:7676"), "::1");
        assert_eq!(trust.server_name("10.0.0.5:7676"), "10.0.0.5");
        assert_eq!(
            Trust::Pinned([0; 32]).server_name("10.0.0.5:7676"),
            SERVER_NAME
        );
        // The coordinator's certificate loads with the CA for its workers.
        let id = Identity::load(
            &p("coordinator.crt"),
            &p("coordinator.key"),
            Some(&p("ca.crt")),
        );
        assert!(id.unwrap().server_config().is_ok());
        // A file without a certificate is a clear error.
        let e = roots(&p("worker.key")).err().unwrap().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
