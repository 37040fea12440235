//! How the error logs of an account's jobs are read (`error_log_sas_file`,
//! `storage_key_file`, `blob_endpoint`): checked once here, so the reader never meets a
//! half-configured account.

use base64::Engine as _;

use super::{check::Checker, raw::RawAccount, ErrorLogCredential, ErrorLogSettings, Secret};

/// Where a Data Box destination account's blobs are, `{account}` standing for its name.
pub const DEFAULT_BLOB_ENDPOINT: &str = "https://{account}.blob.core.windows.net";

/// A SAS or key file longer than this holds something else.
const MAX_SECRET_FILE: usize = 4096;

impl Checker<'_> {
    /// The account's error-log settings; `has_token` says whether its own credential can
    /// ask for Storage tokens (Resource Manager accounts).
    pub(super) fn error_log_settings(
        &mut self,
        i: usize,
        raw: &RawAccount,
        has_token: bool,
    ) -> Option<ErrorLogSettings> {
        let key = |field: &str| format!("account[{i}].{field}");
        let sas = self.secret_file(&raw.error_log_sas_file, key("error_log_sas_file"));
        let storage_key = self.secret_file(&raw.storage_key_file, key("storage_key_file"));
        let credential = match (sas, storage_key) {
            (Some(Err(())), _) | (_, Some(Err(()))) => return None,
            (Some(Ok(_)), Some(Ok((_, at)))) => {
                self.problem(
                    at,
                    key("storage_key_file"),
                    "give error_log_sas_file or storage_key_file, not both",
                );
                return None;
            }
            (Some(Ok((text, at))), None) => {
                let sas = text.trim_start_matches('?');
                if !sas.split('&').any(|p| p.starts_with("sig="))
                    || sas.contains(char::is_whitespace)
                {
                    self.problem(
                        at,
                        key("error_log_sas_file"),
                        "does not hold a SAS: one line of query parameters with sig= (value not shown)",
                    );
                    return None;
                }
                ErrorLogCredential::Sas(Secret::new(sas.as_bytes().to_vec()))
            }
            (None, Some(Ok((text, at)))) => {
                match base64::engine::general_purpose::STANDARD.decode(text.as_bytes()) {
                    Ok(bytes) if !bytes.is_empty() => {
                        ErrorLogCredential::AccountKey(Secret::new(bytes))
                    }
                    _ => {
                        self.problem(
                            at,
                            key("storage_key_file"),
                            "does not hold a storage account key (base64, as the portal shows it; value not shown)",
                        );
                        return None;
                    }
                }
            }
            (None, None) if has_token => ErrorLogCredential::AccountToken,
            (None, None) => ErrorLogCredential::Nothing,
        };
        let blob_endpoint = match &raw.blob_endpoint {
            None => DEFAULT_BLOB_ENDPOINT.to_owned(),
            Some(value) => {
                let text = value.get_ref().trim().trim_end_matches('/');
                if !text.starts_with("https://") || !text.contains("{account}") {
                    self.problem(
                        value.span().start,
                        key("blob_endpoint"),
                        format!("{text:?} must be an https:// URL with {{account}} where the storage account's name goes (default {DEFAULT_BLOB_ENDPOINT})"),
                    );
                    return None;
                }
                text.to_owned()
            }
        };
        Some(ErrorLogSettings {
            credential,
            blob_endpoint,
        })
    }

    /// A secret file's trimmed text and where its key stands, by the rule every secret
    /// follows ([`Checker::secret`]); `Err` once the problem is said.
    fn secret_file(
        &mut self,
        value: &Option<toml::Spanned<std::path::PathBuf>>,
        key: String,
    ) -> Option<Result<(String, usize), ()>> {
        value.as_ref()?;
        Some(match self.secret((&None, key.clone()), (value, key)) {
            Some((text, at, _)) if text.len() <= MAX_SECRET_FILE => Ok((text, at)),
            Some((_, at, key)) => {
                self.problem(
                    at,
                    key,
                    format!("is longer than {MAX_SECRET_FILE} bytes: not a SAS or key"),
                );
                Err(())
            }
            None => Err(()),
        })
    }
}
