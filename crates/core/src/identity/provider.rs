//! Which credential a Resource Manager account uses, built from its config and the
//! environment; the default chain tries environment, workload identity, managed identity
//! and the Azure CLI in that order, settles on the first that answers, and says so once.

use std::{sync::OnceLock, time::Duration};

use sha2::Digest as _;

use super::{
    cli::AzureCli,
    entra::{ClientCredentials, Proof},
    managed::ManagedIdentity,
    Env, Failure, Fetched, TokenError,
};
use crate::{
    config::{ArmAccount, ArmCredential, ManagedIdentityId},
    http_client::HttpsClient,
    tls::Identity,
};

/// One way to a token.
#[derive(Debug)]
enum Single {
    Entra(ClientCredentials),
    Managed(ManagedIdentity),
    Cli(AzureCli),
    /// A credential whose variables are missing: says which, at every request.
    Missing {
        described: String,
        reason: String,
    },
}

impl Single {
    fn describe(&self) -> String {
        match self {
            Single::Entra(c) => c.described.clone(),
            Single::Managed(m) => m.describe(),
            Single::Cli(c) => c.describe(),
            Single::Missing { described, .. } => described.clone(),
        }
    }

    async fn fetch(
        &self,
        http: &HttpsClient,
        scope: &str,
        timeout: Duration,
    ) -> Result<Fetched, TokenError> {
        match self {
            Single::Entra(c) => c.fetch(http, scope, timeout).await,
            Single::Managed(m) => m.fetch(http, scope, timeout).await,
            Single::Cli(c) => c.fetch(scope).await,
            Single::Missing { described, reason } => Err(TokenError::new(
                described,
                Failure::Unavailable,
                reason.clone(),
            )),
        }
    }
}

/// Where an account's tokens come from.
#[derive(Debug)]
pub struct Provider {
    kind: Kind,
    /// Names the credential for the cache: same key, same tokens.
    key: String,
}

#[derive(Debug)]
enum Kind {
    Single(Single),
    /// The default chain: its candidates and, once one answered, which.
    Chain {
        candidates: Vec<Single>,
        settled: OnceLock<usize>,
    },
}

impl Provider {
    /// The provider of `account`'s credential; identity variables read from `env`.
    pub fn for_account(account: &ArmAccount, env: &Env) -> Provider {
        let authority = account.authority.as_str();
        let (kind, key) = match &account.credential {
            ArmCredential::Secret { app, secret } => {
                let digest = hex(&sha2::Sha256::digest(secret.expose()));
                let proof = Proof::Secret(secret.clone());
                let described = format!("app registration {} (client secret)", app.client_id);
                let single = Single::Entra(ClientCredentials::new(
                    authority,
                    &app.tenant_id,
                    &app.client_id,
                    proof,
                    described,
                ));
                (
                    Kind::Single(single),
                    format!(
                        "secret {authority} {} {} {digest}",
                        app.tenant_id, app.client_id
                    ),
                )
            }
            ArmCredential::Certificate { app, identity } => {
                let thumbprint = hex(&identity.sha1_thumbprint());
                let described = format!(
                    "app registration {} (certificate {thumbprint})",
                    app.client_id
                );
                let single = Single::Entra(ClientCredentials::new(
                    authority,
                    &app.tenant_id,
                    &app.client_id,
                    Proof::Certificate(identity.clone()),
                    described,
                ));
                (
                    Kind::Single(single),
                    format!(
                        "certificate {authority} {} {} {thumbprint}",
                        app.tenant_id, app.client_id
                    ),
                )
            }
            ArmCredential::ManagedIdentity(id) => {
                (Kind::Single(managed(id, env)), format!("managed {id:?}"))
            }
            ArmCredential::WorkloadIdentity {
                tenant_id,
                client_id,
            } => (
                Kind::Single(workload(
                    tenant_id.as_deref(),
                    client_id.as_deref(),
                    authority,
                    env,
                )),
                format!("workload {authority} {tenant_id:?} {client_id:?}"),
            ),
            ArmCredential::AzureCli { tenant_id } => (
                Kind::Single(Single::Cli(AzureCli {
                    tenant_id: tenant_id.clone(),
                })),
                format!("cli {tenant_id:?}"),
            ),
            ArmCredential::Default {
                managed_identity,
                tenant_id,
            } => {
                let candidates = vec![
                    environment(authority, env),
                    workload(tenant_id.as_deref(), None, authority, env),
                    managed(managed_identity, env),
                    Single::Cli(AzureCli {
                        tenant_id: tenant_id.clone(),
                    }),
                ];
                (
                    Kind::Chain {
                        candidates,
                        settled: OnceLock::new(),
                    },
                    format!("default {authority} {managed_identity:?} {tenant_id:?}"),
                )
            }
        };
        Provider { kind, key }
    }

    /// The cache key: equal for the same credential.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// The credential in words; for the default chain, the one it settled on.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Single(single) => single.describe(),
            Kind::Chain { candidates, settled } => match settled.get().and_then(|i| candidates.get(*i)) {
                Some(chosen) => format!("default chain: {}", chosen.describe()),
                None => "default chain (environment, workload identity, managed identity, Azure CLI; none has answered yet)".to_owned(),
            },
        }
    }

    pub(super) async fn fetch(
        &self,
        http: &HttpsClient,
        scope: &str,
        timeout: Duration,
    ) -> Result<Fetched, TokenError> {
        match &self.kind {
            Kind::Single(single) => single.fetch(http, scope, timeout).await,
            Kind::Chain {
                candidates,
                settled,
            } => {
                if let Some(chosen) = settled.get().and_then(|i| candidates.get(*i)) {
                    return chosen.fetch(http, scope, timeout).await;
                }
                let mut skipped = Vec::new();
                for (i, candidate) in candidates.iter().enumerate() {
                    let tried = match candidate {
                        Single::Managed(m) => match m.probe(http).await {
                            Ok(()) => m.fetch(http, scope, timeout).await,
                            Err(e) => Err(e),
                        },
                        other => other.fetch(http, scope, timeout).await,
                    };
                    match tried {
                        Ok(fetched) => {
                            if settled.set(i).is_ok() {
                                tracing::info!(
                                    "the default credential chain uses {}",
                                    candidate.describe()
                                );
                            }
                            return Ok(fetched);
                        }
                        // No identity assigned (IMDS's 400) is "not here" to a chain,
                        // as the Azure SDKs take it: the next candidate may answer.
                        Err(e)
                            if e.failure == Failure::Unavailable
                                || (e.failure == Failure::Refused
                                    && matches!(candidate, Single::Managed(_))) =>
                        {
                            skipped.push(e.to_string());
                        }
                        Err(e) => {
                            return Err(TokenError::new("default chain", e.failure, e.to_string()))
                        }
                    }
                }
                Err(TokenError::new(
                    "default chain",
                    Failure::Unavailable,
                    format!("no credential answered: {}", skipped.join("; ")),
                ))
            }
        }
    }
}

fn managed(id: &ManagedIdentityId, env: &Env) -> Single {
    Single::Managed(ManagedIdentity {
        id: id.clone(),
        env: env.clone(),
    })
}

/// Workload identity: the webhook's variables, the config's tenant and client first.
fn workload(tenant: Option<&str>, client: Option<&str>, authority: &str, env: &Env) -> Single {
    let described = "workload identity".to_owned();
    let tenant = tenant
        .map(str::to_owned)
        .or_else(|| env.var("AZURE_TENANT_ID"));
    let client = client
        .map(str::to_owned)
        .or_else(|| env.var("AZURE_CLIENT_ID"));
    let file = env.var("AZURE_FEDERATED_TOKEN_FILE");
    let authority = env
        .var("AZURE_AUTHORITY_HOST")
        .unwrap_or_else(|| authority.to_owned());
    match (tenant, client, file) {
        (Some(tenant), Some(client), Some(file)) => Single::Entra(ClientCredentials::new(
            &authority,
            &tenant,
            &client,
            Proof::FederatedFile(file.clone().into()),
            format!("workload identity {client} (federated token {file})"),
        )),
        (tenant, client, file) => {
            let missing: Vec<&str> = [
                (tenant.is_none(), "AZURE_TENANT_ID"),
                (client.is_none(), "AZURE_CLIENT_ID"),
                (file.is_none(), "AZURE_FEDERATED_TOKEN_FILE"),
            ]
            .into_iter()
            .filter_map(|(gone, name)| gone.then_some(name))
            .collect();
            Single::Missing {
                described,
                reason: format!(
                    "{} not set (AKS sets them in pods labelled azure.workload.identity/use=true \
                     whose service account names the identity's client id)",
                    missing.join(", ")
                ),
            }
        }
    }
}

/// The environment credential: an app registration in `AZURE_TENANT_ID`,
/// `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH`.
fn environment(authority: &str, env: &Env) -> Single {
    let described = "environment (AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH)".to_owned();
    let authority = env
        .var("AZURE_AUTHORITY_HOST")
        .unwrap_or_else(|| authority.to_owned());
    let (Some(tenant), Some(client)) = (env.var("AZURE_TENANT_ID"), env.var("AZURE_CLIENT_ID"))
    else {
        return Single::Missing {
            described,
            reason: "AZURE_TENANT_ID and AZURE_CLIENT_ID are not both set".into(),
        };
    };
    if let Some(secret) = env.var("AZURE_CLIENT_SECRET") {
        let proof = Proof::Secret(crate::config::Secret::new(secret.into_bytes()));
        let described = format!("environment: app registration {client} (AZURE_CLIENT_SECRET)");
        return Single::Entra(ClientCredentials::new(
            &authority, &tenant, &client, proof, described,
        ));
    }
    let Some(path) = env.var("AZURE_CLIENT_CERTIFICATE_PATH") else {
        return Single::Missing {
            described,
            reason: "neither AZURE_CLIENT_SECRET nor AZURE_CLIENT_CERTIFICATE_PATH is set".into(),
        };
    };
    match Identity::load(std::path::Path::new(&path), None) {
        Ok(identity) => Single::Entra(ClientCredentials::new(
            &authority,
            &tenant,
            &client,
            Proof::Certificate(identity),
            format!("environment: app registration {client} (certificate {path})"),
        )),
        Err(e) => Single::Missing {
            described,
            reason: format!("AZURE_CLIENT_CERTIFICATE_PATH {path}: {e}"),
        },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
