//! The cluster's mutual TLS: a CA and one certificate per site and proxy (rcgen), rustls with
//! the ring provider, and peer identities read from verified certificates.
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("certificate {path} is not signed by the cluster CA {ca}: {message}")]
    WrongCa {
        path: PathBuf,
        ca: PathBuf,
        message: String,
    },
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// What a certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Site(String),
    Proxy(String),
    Client(String),
}

const SITE_MARK: &[u8] = b"meridian-site:";
const PROXY_MARK: &[u8] = b"meridian-proxy:";
const CLIENT_MARK: &[u8] = b"meridian-client:";

/// Installs the ring provider as the process default (idempotent).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Writes `ca.pem`, `ca.key` and `<name>.pem`/`<name>.key` for every site, proxy and client.
pub fn generate(
    out: &Path,
    sites: &[String],
    proxies: &[String],
    clients: &[String],
) -> Result<(), TlsError> {
    let setup = |e: rcgen::Error| TlsError::Setup(e.to_string());
    std::fs::create_dir_all(out).map_err(|e| TlsError::File {
        path: out.into(),
        message: e.to_string(),
    })?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(setup)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "meridian cluster CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(setup)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(setup)?;
    write(&out.join("ca.pem"), &ca_cert.pem())?;
    write(&out.join("ca.key"), &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca_params, ca_key);
    let all = sites
        .iter()
        .map(|s| (s, "meridian-site:"))
        .chain(proxies.iter().map(|p| (p, "meridian-proxy:")))
        .chain(clients.iter().map(|c| (c, "meridian-client:")));
    for (name, mark) in all {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).map_err(setup)?;
        p.subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        p.distinguished_name
            .push(DnType::CommonName, format!("{mark}{name}"));
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().map_err(setup)?;
        let cert = p.signed_by(&key, &issuer).map_err(setup)?;
        write(&out.join(format!("{name}.pem")), &cert.pem())?;
        write(&out.join(format!("{name}.key")), &key.serialize_pem())?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(|e| TlsError::File {
        path: path.into(),
        message: e.to_string(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.into(),
        message: format!("cannot read: {e}"),
    })
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::File {
            path: path.into(),
            message: format!("not a PEM certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.into(),
            message: "no certificate in file".into(),
        });
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| TlsError::File {
            path: path.into(),
            message: format!("not a PEM key: {e}"),
        })?
        .ok_or_else(|| TlsError::File {
            path: path.into(),
            message: "no private key in file".into(),
        })
}

/// PEM files of one identity and the CA.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn new(ca: PathBuf, cert_dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            ca,
            cert: cert_dir.join(format!("{name}.pem")),
            key: cert_dir.join(format!("{name}.key")),
        }
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in load_certs(&self.ca)? {
            roots.add(c).map_err(|e| TlsError::File {
                path: self.ca.clone(),
                message: format!("bad CA certificate: {e}"),
            })?;
        }
        Ok(roots)
    }

    /// Checks at start-up that our own certificate chains to the cluster CA.
    pub fn verify_own(&self) -> Result<(), TlsError> {
        let roots = Arc::new(self.roots()?);
        let certs = load_certs(&self.cert)?;
        load_key(&self.key)?;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
        let name = ServerName::try_from("localhost").expect("valid name");
        verifier
            .verify_server_cert(&certs[0], &certs[1..], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| TlsError::WrongCa {
                path: self.cert.clone(),
                ca: self.ca.clone(),
                message: e.to_string(),
            })
    }

    /// Server side: our certificate, and every client must present one signed by the CA.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider())
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(load_certs(&self.cert)?, load_key(&self.key)?)
            .map_err(|e| TlsError::Setup(format!("{}: {e}", self.cert.display())))?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(cfg)
    }

    /// Client side, for tonic channels.
    pub fn client_config(&self) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        let ca = std::fs::read_to_string(&self.ca).map_err(|e| TlsError::File {
            path: self.ca.clone(),
            message: e.to_string(),
        })?;
        let cert = std::fs::read_to_string(&self.cert).map_err(|e| TlsError::File {
            path: self.cert.clone(),
            message: e.to_string(),
        })?;
        let key = std::fs::read_to_string(&self.key).map_err(|e| TlsError::File {
            path: self.key.clone(),
            message: e.to_string(),
        })?;
        Ok(tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .identity(tonic::transport::Identity::from_pem(cert, key))
            .domain_name("localhost"))
    }
}

/// Reads who a (CA-verified) certificate belongs to from its common name.
pub fn identity(cert: &[u8]) -> Option<Identity> {
    for (mark, make) in [
        (SITE_MARK, Identity::Site as fn(String) -> Identity),
        (PROXY_MARK, Identity::Proxy),
        (CLIENT_MARK, Identity::Client),
    ] {
        // The common name is a DER string: one length byte (names are short), then the text.
        if let Some(pos) = cert.windows(mark.len()).position(|w| w == mark) {
            let len = *cert.get(pos.checked_sub(1)?)? as usize;
            let name = cert.get(pos + mark.len()..pos.checked_add(len)?)?;
            if !name.is_empty()
                && name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
            {
                return Some(make(String::from_utf8_lossy(name).into_owned()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_verify_against_their_ca_only() {
        install_provider();
        let a = std::env::temp_dir().join(format!("meridian-tls-a-{}", std::process::id()));
        let b = std::env::temp_dir().join(format!("meridian-tls-b-{}", std::process::id()));
        generate(&a, &["us-east-1".into()], &["proxy-eu".into()], &[]).unwrap();
        generate(&b, &["us-east-1".into()], &[], &[]).unwrap();
        let ok = TlsFiles::new(a.join("ca.pem"), &a, "us-east-1");
        ok.verify_own().unwrap();
        ok.server_config().unwrap();
        let wrong = TlsFiles::new(a.join("ca.pem"), &b, "us-east-1");
        let e = wrong.verify_own().unwrap_err().to_string();
        assert!(e.contains("not signed by the cluster CA"), "{e}");
        let missing = TlsFiles::new(a.join("ca.pem"), &a, "nobody");
        assert!(missing
            .verify_own()
            .unwrap_err()
            .to_string()
            .contains("nobody.pem"));
        let der = load_certs(&a.join("us-east-1.pem")).unwrap();
        assert_eq!(identity(&der[0]), Some(Identity::Site("us-east-1".into())));
        let der = load_certs(&a.join("proxy-eu.pem")).unwrap();
        assert_eq!(identity(&der[0]), Some(Identity::Proxy("proxy-eu".into())));
        let _ = std::fs::remove_dir_all(a);
        let _ = std::fs::remove_dir_all(b);
    }
}
