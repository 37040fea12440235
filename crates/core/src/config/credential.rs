//! A Resource Manager account's credential: `credential = "..."` (without it, the secret
//! or certificate given), and the keys each kind takes. A key another kind takes is a
//! problem, so a config can only say what the credential will use.

use super::{
    accounts::position, check::Checker, raw::RawAccount, AppRegistration, ArmCredential,
    ManagedIdentityId, Secret,
};
use crate::tls::Identity;

/// Longest client secret accepted (Entra ID's are about 40 characters).
const MAX_CLIENT_SECRET_BYTES: usize = 1024;

/// The kinds of credential, as `credential` spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ClientSecret,
    ClientCertificate,
    ManagedIdentity,
    WorkloadIdentity,
    AzureCli,
    Default,
}

const KINDS: [(&str, Kind); 6] = [
    ("client_secret", Kind::ClientSecret),
    ("client_certificate", Kind::ClientCertificate),
    ("managed_identity", Kind::ManagedIdentity),
    ("workload_identity", Kind::WorkloadIdentity),
    ("azure_cli", Kind::AzureCli),
    ("default", Kind::Default),
];

impl Kind {
    fn name(self) -> &'static str {
        KINDS
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(name, _)| name)
    }

    /// Whether this kind takes the account key `field`.
    fn takes(self, field: &str) -> bool {
        use Kind::{ClientCertificate, ClientSecret, Default, ManagedIdentity};
        match field {
            "tenant_id" => self != ManagedIdentity,
            "client_id" => matches!(
                self,
                ClientSecret | ClientCertificate | Kind::WorkloadIdentity
            ),
            "client_secret" | "client_secret_file" => self == ClientSecret,
            "client_certificate" => self == ClientCertificate,
            "managed_identity_client_id"
            | "managed_identity_object_id"
            | "managed_identity_resource_id" => matches!(self, ManagedIdentity | Default),
            _ => true,
        }
    }
}

impl Checker<'_> {
    /// Where the account's tokens come from, checked: an app registration's secret or
    /// certificate (an RSA key that can sign), or an identity Azure gives without one.
    pub(super) fn arm_credential(
        &mut self,
        i: usize,
        raw: &RawAccount,
        at: usize,
    ) -> Option<ArmCredential> {
        let key = |field: &str| format!("account[{i}].{field}");
        let kind = match &raw.credential {
            Some(_) => self.choice(&raw.credential, &key("credential"), &KINDS, Kind::Default)?,
            None if raw.client_certificate.is_some() => Kind::ClientCertificate,
            None if raw.client_secret.is_some() || raw.client_secret_file.is_some() => {
                Kind::ClientSecret
            }
            None => {
                self.problem(
                    at,
                    key("credential"),
                    "is required: client_secret, client_secret_file or client_certificate of \
                     an app registration, or credential = \"managed_identity\", \
                     \"workload_identity\", \"azure_cli\" or \"default\"",
                );
                return None;
            }
        };
        let given = [
            ("tenant_id", position(&raw.tenant_id)),
            ("client_id", position(&raw.client_id)),
            ("client_secret", position(&raw.client_secret)),
            ("client_secret_file", position(&raw.client_secret_file)),
            ("client_certificate", position(&raw.client_certificate)),
            (
                "managed_identity_client_id",
                position(&raw.managed_identity_client_id),
            ),
            (
                "managed_identity_object_id",
                position(&raw.managed_identity_object_id),
            ),
            (
                "managed_identity_resource_id",
                position(&raw.managed_identity_resource_id),
            ),
        ];
        let refused: Vec<(&str, Option<usize>)> = given
            .into_iter()
            .filter(|(field, at)| at.is_some() && !kind.takes(field))
            .collect();
        for (field, offset) in &refused {
            self.problem(
                offset.unwrap_or(at),
                format!("account[{i}].{field}"),
                format!("is not used by credential = {:?}", kind.name()),
            );
        }
        if !refused.is_empty() {
            return None;
        }
        let tenant_id = raw.tenant_id.as_ref().map(|t| t.get_ref().clone());
        let client_id = raw.client_id.as_ref().map(|t| t.get_ref().clone());
        match kind {
            Kind::ClientSecret | Kind::ClientCertificate => {
                let tenant_id = self.required_text(&raw.tenant_id, at, &key("tenant_id"));
                let client_id = self.required_text(&raw.client_id, at, &key("client_id"));
                let app = |tenant_id, client_id| AppRegistration {
                    tenant_id,
                    client_id,
                };
                if kind == Kind::ClientSecret {
                    let secret = self.client_secret(i, raw, at);
                    Some(ArmCredential::Secret {
                        app: app(tenant_id?, client_id?),
                        secret: secret?,
                    })
                } else {
                    let identity = self.client_certificate(i, raw);
                    Some(ArmCredential::Certificate {
                        app: app(tenant_id?, client_id?),
                        identity: identity?,
                    })
                }
            }
            Kind::ManagedIdentity => Some(ArmCredential::ManagedIdentity(
                self.managed_identity_id(i, raw)?,
            )),
            Kind::WorkloadIdentity => Some(ArmCredential::WorkloadIdentity {
                tenant_id,
                client_id,
            }),
            Kind::AzureCli => Some(ArmCredential::AzureCli { tenant_id }),
            Kind::Default => Some(ArmCredential::Default {
                managed_identity: self.managed_identity_id(i, raw)?,
                tenant_id,
            }),
        }
    }

    /// At most one of the three ways to name a user-assigned identity; none is the
    /// system-assigned one.
    fn managed_identity_id(&mut self, i: usize, raw: &RawAccount) -> Option<ManagedIdentityId> {
        let named = [
            (
                &raw.managed_identity_client_id,
                ManagedIdentityId::ClientId as fn(String) -> ManagedIdentityId,
            ),
            (&raw.managed_identity_object_id, ManagedIdentityId::ObjectId),
            (
                &raw.managed_identity_resource_id,
                ManagedIdentityId::ResourceId,
            ),
        ];
        let mut given = named
            .iter()
            .filter_map(|(value, make)| value.as_ref().map(|v| (v, make)));
        let Some((value, make)) = given.next() else {
            return Some(ManagedIdentityId::SystemAssigned);
        };
        if let Some((second, _)) = given.next() {
            self.problem(
                second.span().start,
                format!("account[{i}].managed_identity_client_id"),
                "give one of managed_identity_client_id, managed_identity_object_id and \
                 managed_identity_resource_id",
            );
            return None;
        }
        let text = value.get_ref().trim();
        if text.is_empty() || text.len() > 1024 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            self.problem(
                value.span().start,
                format!("account[{i}].managed_identity_client_id"),
                "is not an identity's id: one word of printable ASCII",
            );
            return None;
        }
        Some(make(text.to_owned()))
    }

    /// client_certificate: a PEM certificate with an RSA key that can sign.
    fn client_certificate(&mut self, i: usize, raw: &RawAccount) -> Option<Identity> {
        let key = format!("account[{i}].client_certificate");
        let cert = raw.client_certificate.as_ref()?;
        let path = self.relative_path(cert.get_ref());
        let checked = Identity::load(&path, None)
            .map_err(|e| e.to_string())
            .and_then(|identity| {
                identity
                    .sign_rs256(b"probe")
                    .map(|_| identity)
                    .map_err(|e| e.to_string())
            });
        match checked {
            Ok(identity) => {
                self.warn_if_exposed(cert.span().start, key, &path, "private key file");
                Some(identity)
            }
            Err(e) => {
                self.problem(cert.span().start, key, e);
                None
            }
        }
    }

    /// client_secret or client_secret_file, by the one rule for secrets.
    fn client_secret(&mut self, i: usize, raw: &RawAccount, at: usize) -> Option<Secret> {
        let key = |field: &str| format!("account[{i}].{field}");
        if raw.client_secret.is_none() && raw.client_secret_file.is_none() {
            self.problem(
                at,
                key("client_secret"),
                "is required (client_secret or client_secret_file)",
            );
            return None;
        }
        let (text, at, key) = self.secret(
            (&raw.client_secret, key("client_secret")),
            (&raw.client_secret_file, key("client_secret_file")),
        )?;
        // Checked before it is ever sent: a file holding something else (a certificate,
        // a config, several lines) would otherwise go to the token endpoint.
        if text.len() > MAX_CLIENT_SECRET_BYTES || !text.bytes().all(|b| b.is_ascii_graphic()) {
            self.problem(
                at,
                key,
                "does not look like a client secret: one line of printable ASCII without \
                 spaces, at most 1024 characters (value not shown)",
            );
            return None;
        }
        Some(Secret::new(text.into_bytes()))
    }
}
