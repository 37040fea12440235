//! What a service's words may not carry into iewatch's memory: a SAS signature (`sig=`,
//! the credential of a storage URL) and an e-mail address (a person's). Error answers
//! are read through [`ServiceError::new`](super::ServiceError::new), which passes every
//! field through [`scrubbed`], as 200 bodies pass theirs through the wire modules' own
//! scrub; so a `last_error`, a `job.poll_failing` text or a log line never holds them.

/// `text` with each SAS signature's value and each e-mail address replaced.
pub fn scrubbed(text: &str) -> String {
    without_emails(&without_signatures(text))
}

/// Characters that end a URL query value.
fn ends_value(c: char) -> bool {
    c == '&' || c == '"' || c == '\'' || c == '<' || c == '>' || c.is_whitespace()
}

fn without_signatures(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find("sig=") {
        let value = at + found + "sig=".len();
        out.push_str(&text[at..value]);
        out.push_str("[redacted]");
        at = text[value..]
            .find(ends_value)
            .map_or(text.len(), |end| value + end);
    }
    out.push_str(&text[at..]);
    out
}

fn without_emails(text: &str) -> String {
    let local = |c: char| c.is_ascii_alphanumeric() || "._%+-".contains(c);
    let domain = |c: char| c.is_ascii_alphanumeric() || ".-".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let start = rest[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| local(*c))
            .last()
            .map_or(at, |(i, _)| i);
        let end = rest[at + 1..]
            .find(|c: char| !domain(c))
            .map_or(rest.len(), |e| at + 1 + e);
        let host = rest[at + 1..end].trim_end_matches('.');
        if start < at && host.contains('.') {
            out.push_str(&rest[..start]);
            out.push_str("[e-mail]");
            rest = &rest[at + 1 + host.len()..];
        } else {
            out.push_str(&rest[..=at]);
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::scrubbed;

    #[test]
    fn signatures_and_addresses_go_the_rest_stays() {
        assert_eq!(
            scrubbed("Cannot read https://a.blob.core.windows.net/c/x?sv=2020&SIG=abc%2Bdef&se=1 for jane.doe+ie@contoso.com."),
            "Cannot read https://a.blob.core.windows.net/c/x?sv=2020&SIG=[redacted]&se=1 for [e-mail]."
        );
        assert_eq!(
            scrubbed("sig=\"x\" user@host"),
            "sig=[redacted]\"x\" user@host"
        );
        assert_eq!(
            scrubbed("a @ b, @home, ünïcode@例.jp"),
            "a @ b, @home, ünïcode@例.jp"
        );
        assert_eq!(scrubbed("sig="), "sig=[redacted]");
    }
}
