//! The Azure CLI's signed-in account (`az account get-access-token`), for trying iewatch
//! on a laptop. The command is bounded in time and output; its output holds a token and
//! is never logged.

use std::time::Duration;

use tokio::io::AsyncReadExt as _;

use super::{first_line, resource_of, Failure, Fetched, TokenError};

/// How long `az` may take (the Azure SDKs wait 10 s too).
const AZ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most output read from `az`.
const AZ_OUTPUT_LIMIT: u64 = 64 * 1024;

/// The Azure CLI as a credential.
#[derive(Debug)]
pub(crate) struct AzureCli {
    pub(crate) tenant_id: Option<String>,
}

impl AzureCli {
    pub(crate) fn describe(&self) -> String {
        match &self.tenant_id {
            Some(tenant) => format!("Azure CLI (az, signed-in account, tenant {tenant})"),
            None => "Azure CLI (az, signed-in account)".to_owned(),
        }
    }

    fn error(&self, failure: Failure, message: impl Into<String>) -> TokenError {
        TokenError::new(&self.describe(), failure, message)
    }

    /// `az account get-access-token --output json --resource R [--tenant T]`.
    pub(crate) async fn fetch(&self, scope: &str) -> Result<Fetched, TokenError> {
        let mut command = tokio::process::Command::new("az");
        command
            .args([
                "account",
                "get-access-token",
                "--output",
                "json",
                "--resource",
            ])
            .arg(resource_of(scope))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(tenant) = &self.tenant_id {
            command.arg("--tenant").arg(tenant);
        }
        let mut child = command.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                self.error(
                    Failure::Unavailable,
                    "`az` is not on PATH: install the Azure CLI and run `az login`, or choose \
                     another credential",
                )
            } else {
                self.error(Failure::Transient, format!("cannot run `az`: {e}"))
            }
        })?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let out = child.stdout.take();
        let err = child.stderr.take();
        // Both pipes at once: `az` blocks on a full one we do not read.
        let run = async {
            let read_out = async {
                match out {
                    Some(out) => out.take(AZ_OUTPUT_LIMIT).read_to_end(&mut stdout).await,
                    None => Ok(0),
                }
            };
            let read_err = async {
                match err {
                    Some(err) => err.take(AZ_OUTPUT_LIMIT).read_to_end(&mut stderr).await,
                    None => Ok(0),
                }
            };
            let (read_out, read_err) = tokio::join!(read_out, read_err);
            read_out?;
            read_err?;
            child.wait().await
        };
        let status = match tokio::time::timeout(AZ_TIMEOUT, run).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => return Err(self.error(Failure::Transient, format!("`az` failed: {e}"))),
            Err(_) => {
                return Err(self.error(
                    Failure::Transient,
                    format!(
                        "`az account get-access-token` did not finish within {} s",
                        AZ_TIMEOUT.as_secs()
                    ),
                ))
            }
        };
        if !status.success() {
            let said = first_line(&String::from_utf8_lossy(&stderr));
            let signed_out = said.contains("az login") || said.contains("AADSTS");
            return Err(self.error(
                if signed_out {
                    Failure::Refused
                } else {
                    Failure::Transient
                },
                format!("`az account get-access-token` failed ({status}): {said}"),
            ));
        }
        parse_cli_token(&stdout).map_err(|m| self.error(Failure::Transient, m))
    }
}

/// The CLI's answer: `accessToken` and `expires_on` (Unix seconds, CLI 2.54.0 and later).
fn parse_cli_token(stdout: &[u8]) -> Result<Fetched, String> {
    #[derive(serde::Deserialize)]
    struct CliToken {
        #[serde(rename = "accessToken")]
        access_token: String,
        #[serde(default)]
        expires_on: Option<serde_json::Value>,
    }
    let token: CliToken = serde_json::from_slice(stdout).map_err(|_| {
        "`az account get-access-token` printed no token (not JSON with accessToken)".to_owned()
    })?;
    let expires_on = match token.expires_on {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or("the Azure CLI gave no expires_on: use Azure CLI 2.54.0 or later")?;
    let now = crate::wall_clock::now().unix_secs().unsigned_abs();
    Ok(Fetched {
        access_token: token.access_token,
        lifetime: Some(expires_on.saturating_sub(now)),
    })
}
