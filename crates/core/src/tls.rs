//! Certificates and keys: loading PEM files into rustls types and building the client and
//! server TLS configurations. The management certificate is a TLS client certificate, so
//! the classic source, the simulator and the tests all meet here.

use std::{fmt, path::Path, sync::Arc};

use rustls::{
    crypto::{ring, CryptoProvider},
    server::WebPkiClientVerifier,
    ClientConfig, RootCertStore, ServerConfig,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// Why certificates or keys could not be loaded or combined.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read or holds no PEM object of the wanted kind.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// rustls refused the combination (key does not match the certificate, ...).
    #[error("{0}")]
    Config(#[from] rustls::Error),
    /// The key cannot do what it is needed for (an EC key where RS256 is required).
    #[error("{0}")]
    UnsuitableKey(&'static str),
    /// The client-certificate verifier could not be built from the roots.
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// A certificate chain and its private key: a management certificate, or a server's.
#[derive(Clone)]
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

/// The crypto provider iewatch uses everywhere (ring: no C toolchain beyond cc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn file_error(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Every certificate in a PEM file.
///
/// # Errors
/// The file cannot be read, a PEM block is malformed, or there is no certificate.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

impl Identity {
    /// Loads a certificate chain and its key from one PEM file holding both (the
    /// management-certificate convention) or from two files. The key may be PKCS#8,
    /// PKCS#1 (RSA) or SEC1 (EC).
    ///
    /// # Errors
    /// A file cannot be read, has no certificate or no key, or the key does not belong
    /// to the certificate.
    pub fn load(cert_path: &Path, key_path: Option<&Path>) -> Result<Self, TlsError> {
        let chain = load_certificates(cert_path)?;
        let key_path = key_path.unwrap_or(cert_path);
        let key_bytes = std::fs::read(key_path).map_err(|e| file_error(key_path, e))?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
            file_error(
                key_path,
                format!("no usable private key (PKCS#8, PKCS#1 or SEC1): {e}"),
            )
        })?;
        let identity = Identity {
            chain,
            key: Arc::new(key),
        };
        identity.check_key_matches()?;
        Ok(identity)
    }

    /// Builds an identity from PEM text (tests, the simulator's generated certificates).
    ///
    /// # Errors
    /// As [`Identity::load`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::File {
                path: "<memory>".into(),
                reason: e.to_string(),
            })?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::File {
                path: "<memory>".into(),
                reason: e.to_string(),
            })?;
        Ok(Identity {
            chain,
            key: Arc::new(key),
        })
    }

    fn check_key_matches(&self) -> Result<(), TlsError> {
        let signing_key = provider()
            .key_provider
            .load_private_key(self.key.clone_key())
            .map_err(TlsError::Config)?;
        let certified = rustls::sign::CertifiedKey::new(self.chain.clone(), signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(())
            }
            Err(e) => Err(TlsError::Config(e)),
        }
    }

    /// Signs `message` with RSASSA-PKCS1-v1_5 SHA-256 (JWT `RS256`): the signature of an
    /// Entra ID client assertion.
    ///
    /// # Errors
    /// The key is not RSA (Entra ID certificate credentials are RSA).
    pub fn sign_rs256(&self, message: &[u8]) -> Result<Vec<u8>, TlsError> {
        let key = provider()
            .key_provider
            .load_private_key(self.key.clone_key())?;
        let signer = key
            .choose_scheme(&[rustls::SignatureScheme::RSA_PKCS1_SHA256])
            .ok_or(TlsError::UnsuitableKey(
                "the key is not RSA; certificate credentials need an RSA key",
            ))?;
        Ok(signer.sign(message)?)
    }

    /// SHA-1 of the leaf certificate: the `x5t` that names it in a JWT header.
    pub fn sha1_thumbprint(&self) -> Vec<u8> {
        use sha1::Digest as _;
        self.chain
            .first()
            .map(|c| sha1::Sha1::digest(c.as_ref()).to_vec())
            .unwrap_or_default()
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// A root store of the system's trust anchors plus `extra`. System roots that fail to
/// load are skipped: the extra roots alone may be what a deployment needs.
pub fn root_store(extra: &[CertificateDer<'static>], system_roots: bool) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    if system_roots {
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
    }
    roots.add_parsable_certificates(extra.iter().cloned());
    roots
}

/// A client configuration presenting `identity` (if any) and trusting `roots`.
///
/// # Errors
/// rustls refuses the key.
pub fn client_config(
    roots: RootCertStore,
    identity: Option<&Identity>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    // ALPN is left to hyper-rustls, which sets it from the HTTP versions it enables.
    Ok(match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key())?,
        None => builder.with_no_client_auth(),
    })
}

/// A server configuration without client certificates (Resource Manager's side of the
/// simulator, where bearer tokens authenticate).
///
/// # Errors
/// rustls refuses the key.
pub fn server_config(identity: &Identity) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A server configuration that requires a client certificate issued by one of
/// `client_roots` (the management-certificate check).
///
/// # Errors
/// The roots are unusable or rustls refuses the key.
pub fn server_config_requiring_client_cert(
    identity: &Identity,
    client_roots: RootCertStore,
) -> Result<ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
