//! `[[account]]`: classic accounts (management certificate) and Resource Manager
//! accounts (Entra ID app registration).

use super::{
    check::Checker, raw::RawAccount, Account, AccountKind, ArmAccount, ArmProvider, ClassicAccount,
    DEFAULT_ARM_ENDPOINT, DEFAULT_AUTHORITY, DEFAULT_CLASSIC_ENDPOINT, SUPPORTED_VERSIONS,
};
use crate::tls::Identity;
use toml::Spanned;

/// Where a value stands in the file, if it was given.
pub(super) fn position<T>(value: &Option<Spanned<T>>) -> Option<usize> {
    value.as_ref().map(|v| v.span().start)
}

/// The kinds of account, as `kind` spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Classic,
    Arm,
    DataBox,
}

impl Checker<'_> {
    pub(super) fn resolve_account(
        &mut self,
        i: usize,
        raw: &RawAccount,
        at: usize,
    ) -> Option<Account> {
        let key = |field: &str| format!("account[{i}].{field}");
        let name = self
            .name(&raw.name, at, &key("name"))
            .map(|n| n.get_ref().clone());
        let subscription_id = self.required_text(&raw.subscription_id, at, &key("subscription_id"));
        let kind = self.choice(
            &raw.kind,
            &key("kind"),
            &[
                ("classic", Kind::Classic),
                ("arm", Kind::Arm),
                ("databox", Kind::DataBox),
            ],
            Kind::Classic,
        )?;
        let provider = match kind {
            Kind::Classic => None,
            Kind::Arm => Some(ArmProvider::ImportExport),
            Kind::DataBox => Some(ArmProvider::DataBox),
        };
        if let Some(provider) = provider {
            return self.resolve_arm_account(i, raw, at, (name, subscription_id), provider);
        }
        let arm_only = [
            ("resource_group", position(&raw.resource_group)),
            ("tenant_id", position(&raw.tenant_id)),
            ("client_id", position(&raw.client_id)),
            ("client_secret", position(&raw.client_secret)),
            ("client_secret_file", position(&raw.client_secret_file)),
            ("client_certificate", position(&raw.client_certificate)),
            ("authority", position(&raw.authority)),
            ("jobs", position(&raw.jobs)),
            ("credential", position(&raw.credential)),
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
        self.only_for(
            &arm_only,
            &format!("account[{i}]"),
            "kind = \"arm\" or \"databox\" accounts",
        );
        let storage_account = self.required_text(&raw.storage_account, at, &key("storage_account"));
        let endpoint = self.https_base(&raw.endpoint, DEFAULT_CLASSIC_ENDPOINT, &key("endpoint"));
        let x_ms_version = self.choice_with(
            &raw.x_ms_version,
            &key("x_ms_version"),
            &SUPPORTED_VERSIONS.map(|v| (v, v)),
            SUPPORTED_VERSIONS[0],
            |v| format!("{v:?} is not {}", SUPPORTED_VERSIONS.join(" or ")),
        );
        let identity = self.management_certificate(raw, i, at);
        let extra_roots = self.extra_roots(&raw.ca_certificate, &key("ca_certificate"));
        let error_logs = self.error_log_settings(i, raw, false);
        Some(Account {
            name: name?,
            subscription_id: subscription_id?,
            store_bitlocker_keys: raw.store_bitlocker_keys.unwrap_or(false),
            error_logs: error_logs?,
            kind: AccountKind::Classic(ClassicAccount {
                storage_account: storage_account?,
                endpoint: endpoint?,
                identity: identity?,
                extra_roots: extra_roots?,
                x_ms_version: x_ms_version?,
            }),
        })
    }

    /// `kind = "arm"` and `kind = "databox"`: Resource Manager with Entra ID tokens.
    fn resolve_arm_account(
        &mut self,
        i: usize,
        raw: &RawAccount,
        at: usize,
        (name, subscription_id): (Option<String>, Option<String>),
        provider: ArmProvider,
    ) -> Option<Account> {
        let key = |field: &str| format!("account[{i}].{field}");
        let classic_only = [
            ("storage_account", position(&raw.storage_account)),
            ("certificate", position(&raw.certificate)),
            ("certificate_key", position(&raw.certificate_key)),
            ("x_ms_version", position(&raw.x_ms_version)),
        ];
        self.only_for(
            &classic_only,
            &format!("account[{i}]"),
            "kind = \"classic\" accounts",
        );

        if provider == ArmProvider::DataBox && raw.store_bitlocker_keys == Some(true) {
            self.warn(
                at,
                key("store_bitlocker_keys"),
                "has no effect on a Data Box account: iewatch keeps a whitelist of an order's \
                 fields, and no key is among them"
                    .into(),
            );
        }
        let discover_all =
            self.choice_with(&raw.jobs, &key("jobs"), &[("all", true)], false, |v| {
                format!("{v:?}: the only value is \"all\" (watch every job of the resource group)")
            }) == Some(true);
        let resource_group = self.required_text(&raw.resource_group, at, &key("resource_group"));
        let credential = self.arm_credential(i, raw, at);
        let endpoint = self.https_base(&raw.endpoint, DEFAULT_ARM_ENDPOINT, &key("endpoint"));
        let authority = self.https_base(&raw.authority, DEFAULT_AUTHORITY, &key("authority"));
        let extra_roots = self.extra_roots(&raw.ca_certificate, &key("ca_certificate"));
        let error_logs = self.error_log_settings(i, raw, true);
        Some(Account {
            name: name?,
            subscription_id: subscription_id?,
            store_bitlocker_keys: raw.store_bitlocker_keys.unwrap_or(false),
            error_logs: error_logs?,
            kind: AccountKind::Arm(ArmAccount {
                resource_group: resource_group?,
                credential: credential?,
                endpoint: endpoint?,
                authority: authority?,
                extra_roots: extra_roots?,
                discover_all,
                provider,
            }),
        })
    }

    /// The classic account's management certificate and its key (PEM).
    fn management_certificate(
        &mut self,
        raw: &RawAccount,
        i: usize,
        at: usize,
    ) -> Option<Identity> {
        let key = format!("account[{i}].certificate");
        let Some(cert) = &raw.certificate else {
            self.problem(
                at,
                key,
                "is required (PEM management certificate with its key)",
            );
            return None;
        };
        let cert_path = self.relative_path(cert.get_ref());
        let key_path = raw
            .certificate_key
            .as_ref()
            .map(|k| self.relative_path(k.get_ref()));
        match Identity::load(&cert_path, key_path.as_deref()) {
            Ok(identity) => {
                let key_file = key_path.as_deref().unwrap_or(&cert_path);
                self.warn_if_exposed(cert.span().start, key, key_file, "private key file");
                Some(identity)
            }
            Err(e) => {
                self.problem(cert.span().start, key, e.to_string());
                None
            }
        }
    }
}
