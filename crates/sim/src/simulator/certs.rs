//! Test PKI for the simulator: a CA, a server certificate for the listen address and a
//! management (client) certificate, written once into a directory and reused after, so
//! that a config pasted from the first run keeps working.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Where the simulator's certificates are.
#[derive(Clone, Debug)]
pub struct CertPaths {
    /// The CA certificate: trust it as `ca_certificate`.
    pub ca: PathBuf,
    /// The CA key (to issue more certificates).
    pub ca_key: PathBuf,
    /// Server certificate and key (one PEM file).
    pub server: PathBuf,
    /// Management certificate and key (one PEM file): the account's `certificate`.
    pub client: PathBuf,
    /// The simulated storage account's key: a classic account's `storage_key_file`.
    pub storage_key: PathBuf,
}

impl CertPaths {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> CertPaths {
        CertPaths {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server: dir.join("server.pem"),
            client: dir.join("management.pem"),
            storage_key: dir.join("storage.key"),
        }
    }
}

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing or reading the directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A CA that can issue certificates (tests issue "wrong" ones from a second CA).
pub struct CertificateAuthority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl CertificateAuthority {
    /// A fresh CA.
    ///
    /// # Errors
    /// rcgen failed.
    pub fn generate(common_name: &str) -> Result<Self, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA key, PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses): (cert PEM, key PEM).
    ///
    /// # Errors
    /// rcgen failed.
    pub fn issue_server(&self, names: &[String]) -> Result<(String, String), CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "iewatch simulator");
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client (management) certificate: (cert PEM, key PEM).
    ///
    /// # Errors
    /// rcgen failed.
    pub fn issue_client(&self, common_name: &str) -> Result<(String, String), CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Result<(String, String), CertError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Writes a file readable by its owner only (keys are in it).
///
/// # Errors
/// The file cannot be written.
pub fn write_private(path: &Path, contents: &str) -> Result<(), CertError> {
    use std::io::Write as _;
    let io = |source| CertError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}

/// Makes the CA, server and management certificates in `dir` unless they are there.
/// The server certificate names localhost, 127.0.0.1, ::1 and `extra_name` if given.
///
/// # Errors
/// The directory cannot be written or existing files cannot be read.
pub fn ensure_certificates(dir: &Path, extra_name: Option<&str>) -> Result<CertPaths, CertError> {
    let paths = CertPaths::in_dir(dir);
    if paths.ca.exists() && !paths.storage_key.exists() {
        write_private(&paths.storage_key, super::blobs::ACCOUNT_KEY)?;
    }
    if paths.ca.exists() && paths.ca_key.exists() && paths.server.exists() && paths.client.exists()
    {
        return Ok(paths);
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let ca = CertificateAuthority::generate("iewatch simulator CA")?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(extra) = extra_name {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_owned());
        }
    }
    let (server_cert, server_key) = ca.issue_server(&names)?;
    let (client_cert, client_key) = ca.issue_client("iewatch management certificate")?;
    write_private(&paths.ca, &ca.cert_pem())?;
    write_private(&paths.ca_key, &ca.key_pem())?;
    write_private(&paths.server, &format!("{server_cert}{server_key}"))?;
    write_private(&paths.client, &format!("{client_cert}{client_key}"))?;
    write_private(&paths.storage_key, super::blobs::ACCOUNT_KEY)?;
    Ok(paths)
}
