//! An e-mail webhook's settings: the `smtp://` or `smtps://` server, the addresses, the
//! credentials and trust roots, and the digest interval.

use super::{check::Checker, raw::RawWebhook, EmailSettings, Secret, WebhookUrl};

impl Checker<'_> {
    /// `format = "email"`: `url = "smtp://host[:587]"` (STARTTLS, required) or
    /// `"smtps://host[:465]"` (implicit TLS), `from`, `to`, optional `username` with
    /// `password`/`password_file`, `ca_certificate`, `digest_every`.
    // Long: one check per e-mail key, in the order the README lists them; each is
    // two or three lines and says its own problem.
    pub(super) fn email_settings(
        &mut self,
        raw: &RawWebhook,
        i: usize,
        at: usize,
        timeout: std::time::Duration,
    ) -> Option<(WebhookUrl, EmailSettings)> {
        let key = |field: &str| format!("webhook[{i}].{field}");
        let value = self.required(&raw.url, at, &key("url"))?;
        let parsed = value.get_ref().parse::<http::Uri>().ok();
        let (implicit_tls, default_port) = match parsed.as_ref().and_then(|u| u.scheme_str()) {
            Some("smtp") => (false, 587),
            Some("smtps") => (true, 465),
            _ => {
                self.problem(
                    value.span().start,
                    key("url"),
                    "is not smtp://HOST[:PORT] (STARTTLS) or smtps://HOST[:PORT] (implicit TLS); \
                     mail is never sent in clear",
                );
                return None;
            }
        };
        let uri = parsed?;
        let host = uri.host().filter(|h| !h.is_empty())?.to_owned();
        let port = uri.port_u16().unwrap_or(default_port);
        let from = self
            .required(&raw.from, at, &key("from"))
            .map(|f| f.get_ref().clone());
        let addressed = |text: &str| text.parse::<lettre::message::Mailbox>().is_ok();
        if let Some(from) = raw.from.as_ref().filter(|f| !addressed(f.get_ref())) {
            self.problem(
                from.span().start,
                key("from"),
                format!("{:?} is not an e-mail address", from.get_ref()),
            );
        }
        let to = match &raw.to {
            Some(list) if !list.get_ref().is_empty() => {
                for address in list.get_ref().iter().filter(|a| !addressed(a)) {
                    self.problem(
                        list.span().start,
                        key("to"),
                        format!("{address:?} is not an e-mail address"),
                    );
                }
                Some(list.get_ref().clone())
            }
            _ => {
                self.problem(
                    at,
                    key("to"),
                    "is required: a list of one or more addresses",
                );
                None
            }
        };
        let credentials = match (
            &raw.username,
            raw.password.is_some() || raw.password_file.is_some(),
        ) {
            (None, false) => Some(None),
            (Some(user), true) => self
                .secret(
                    (&raw.password, key("password")),
                    (&raw.password_file, key("password_file")),
                )
                .map(|(text, _, _)| Some((user.get_ref().clone(), Secret::new(text.into_bytes())))),
            (Some(user), false) => {
                self.problem(
                    user.span().start,
                    key("password_file"),
                    "is required with username (or password)",
                );
                None
            }
            (None, true) => {
                self.problem(at, key("username"), "is required with a password");
                None
            }
        };
        let extra_roots = self.extra_roots(&raw.ca_certificate, &key("ca_certificate"));
        let digest_every = raw.digest_every.as_ref().map(|_| {
            self.duration(
                &raw.digest_every,
                &key("digest_every"),
                std::time::Duration::from_secs(3600),
            )
        });
        let settings = EmailSettings {
            host,
            port,
            implicit_tls,
            from: from?,
            to: to?,
            credentials: credentials?,
            extra_roots: extra_roots?,
            digest_every,
            timeout,
        };
        Some((WebhookUrl::new(uri), settings))
    }
}
