//! A source's own document for `jobs.snapshot`: its wire shape with the secrets taken
//! out, and where those secrets go back in for an account that set
//! `store_bitlocker_keys`. Each wire module builds one, so the store writes text it never
//! has to understand.

use serde_json::{Map, Value};

use crate::model::{BitLockerKey, DriveSnapshot, JobSnapshot};

/// Takes every key spelled `BitLockerKey` in any casing out of `fields` (the service's
/// own casing differs between APIs; a key under an unexpected spelling must neither be
/// stored nor sent) and returns the first one's value as the drive's key.
pub(crate) fn take_bitlocker_key(fields: &mut Map<String, Value>) -> Option<BitLockerKey> {
    let keys: Vec<String> = fields
        .keys()
        .filter(|k| k.eq_ignore_ascii_case("bitlockerkey"))
        .cloned()
        .collect();
    keys.iter()
        .filter_map(|k| fields.remove(k))
        .filter_map(|v| v.as_str().map(BitLockerKey::new))
        .next()
}

/// The document of one poll. Debug never shows a secret.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Document {
    redacted: Value,
    secrets: Vec<SecretField>,
}

/// A secret and the place it was taken from.
#[derive(Clone, Debug, PartialEq)]
struct SecretField {
    /// JSON pointer to the object that held it, e.g. `/DriveList/0`.
    parent: String,
    /// Its key in that object, spelled as the wire spells it.
    key: &'static str,
    value: BitLockerKey,
}

impl Document {
    /// A document already free of secrets.
    pub fn new(redacted: Value) -> Document {
        Document {
            redacted,
            secrets: Vec::new(),
        }
    }

    /// Remembers a secret that was left out of the document at `parent`/`key`.
    pub fn with_secret(mut self, parent: String, key: &'static str, value: BitLockerKey) -> Self {
        self.secrets.push(SecretField { parent, key, value });
        self
    }

    /// Splits a wire job into its watched fields and this document: each drive's key,
    /// if any, is remembered as belonging at `{list}/{i}`, under `key`.
    pub(crate) fn split(
        self,
        job: JobSnapshot,
        drives: impl IntoIterator<Item = (DriveSnapshot, Option<BitLockerKey>)>,
        (list, key): (&str, &'static str),
    ) -> (JobSnapshot, Document) {
        let mut document = self;
        let mut job = job;
        for (i, (drive, secret)) in drives.into_iter().enumerate() {
            if let Some(secret) = secret {
                document = document.with_secret(format!("{list}/{i}"), key, secret);
            }
            job.drives.push(drive);
        }
        (job, document)
    }

    /// The document without secrets.
    pub fn redacted(&self) -> &Value {
        &self.redacted
    }

    /// How many secrets were taken out.
    pub fn secret_count(&self) -> usize {
        self.secrets.len()
    }

    /// The text `jobs.snapshot` keeps: without secrets, or with them put back when the
    /// account opted in (`store_bitlocker_keys`).
    pub fn render(&self, with_secrets: bool) -> String {
        if !with_secrets || self.secrets.is_empty() {
            return self.redacted.to_string();
        }
        let mut document = self.redacted.clone();
        for secret in &self.secrets {
            if let Some(object) = document
                .pointer_mut(&secret.parent)
                .and_then(Value::as_object_mut)
            {
                object.insert(secret.key.into(), secret.value.expose().into());
            }
        }
        document.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_go_back_only_when_asked_and_never_into_debug() {
        let document = Document::new(serde_json::json!({"DriveList": [{"DriveId": "A"}]}))
            .with_secret(
                "/DriveList/0".into(),
                "BitLockerKey",
                BitLockerKey::new("1234"),
            );
        assert!(!document.render(false).contains("1234"));
        assert_eq!(
            document.render(true),
            r#"{"DriveList":[{"BitLockerKey":"1234","DriveId":"A"}]}"#
        );
        assert!(!format!("{document:?}").contains("1234"));
        assert_eq!(document.secret_count(), 1);
    }
}
