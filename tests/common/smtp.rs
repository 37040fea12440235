//! A real SMTP server for the e-mail tests: Python's aiosmtpd (tests/clients/smtp_sink.py)
//! on 127.0.0.1 with a certificate of the test's own CA, and the helpers that read what
//! it accepted.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

/// A running aiosmtpd, killed on drop.
pub struct SmtpSink {
    child: Child,
    outdir: PathBuf,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A message as its reader sees it: headers unfolded with their RFC 2047 encoded words
/// (`=?utf-8?b?...?=`) decoded, the quoted-printable body decoded.
pub fn readable(message: &str) -> String {
    let (head, body) = message
        .split_once("\r\n\r\n")
        .or_else(|| message.split_once("\n\n"))
        .unwrap_or((message, ""));
    format!(
        "{}\r\n\r\n{}",
        decode_words(&head.replace("\r\n ", " ")),
        quoted_printable(body)
    )
}

/// Decodes base64 encoded words; the space between two of them goes, as RFC 2047 says.
fn decode_words(head: &str) -> String {
    use base64::Engine as _;
    let (open, close) = ("=?utf-8?b?", "?=");
    let mut out = String::new();
    let mut rest = head;
    let mut pending: Vec<u8> = Vec::new();
    while let Some(start) = rest.find(open) {
        let between = &rest[..start];
        if !between.trim().is_empty() || pending.is_empty() {
            out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut pending)));
            out.push_str(between);
        }
        let word = &rest[start + open.len()..];
        let end = word.find(close).unwrap_or(word.len());
        pending.extend(
            base64::engine::general_purpose::STANDARD
                .decode(&word[..end])
                .unwrap_or_default(),
        );
        rest = &word[(end + close.len()).min(word.len())..];
    }
    out.push_str(&String::from_utf8_lossy(&pending));
    out.push_str(rest);
    out
}

fn quoted_printable(body: &str) -> String {
    let joined = body.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SmtpSink {
    /// True once a `silent-first` sink holds the first message's DATA unanswered.
    pub fn held(&self) -> bool {
        self.outdir.join("held").exists()
    }

    /// The connections the accepted messages came on: one client port per message,
    /// in order.
    pub fn connections(&self) -> Vec<String> {
        self.files("peer")
            .map(|text| text.trim().to_owned())
            .collect()
    }

    /// Every message accepted so far, in order, as its reader sees it.
    pub fn messages(&self) -> Vec<String> {
        self.files("eml").map(|text| readable(&text)).collect()
    }

    /// The text of the sink's files ending in `.extension`, in order of their names.
    fn files(&self, extension: &str) -> impl Iterator<Item = String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.outdir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == extension));
        names.sort();
        names
            .into_iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
    }
}

/// True when python3 has aiosmtpd; otherwise says what to install (or fails, under CI).
pub fn smtp_server_present(test: &str) -> bool {
    let present = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        super::not_run(
            "IEWATCH_REQUIRE_SMTP",
            &format!(
                "{test} (tests/email.rs): python3 cannot import aiosmtpd, the real SMTP \
                 server; install it with `python3 -m pip install aiosmtpd`"
            ),
        );
    }
    present
}

/// The CA that signs the sink's certificate, written to `dir/ca.pem`.
pub fn pki(dir: &Path) -> (PathBuf, PathBuf) {
    let pki = super::TestPki::new("iewatch test SMTP CA");
    std::fs::write(dir.join("ca.pem"), pki.ca.cert_pem()).unwrap();
    let (cert, key) = pki
        .ca
        .issue_server(&["127.0.0.1".into(), "localhost".into()])
        .unwrap();
    let (cert_path, key_path) = (dir.join("smtp-cert.pem"), dir.join("smtp-key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (cert_path, key_path)
}

/// Starts aiosmtpd (`mode`: `starttls` or `tls`) on `port`, accepting every message.
pub fn start_sink(dir: &Path, mode: &str, port: u16, password: &str) -> SmtpSink {
    start_sink_behaving(dir, mode, port, password, "accept")
}

/// As [`start_sink`], with a `behaviour` (see smtp_sink.py): `accept`, `refuse-first`
/// (550 to the first message), `defer-first` (451 to the first), `silent-data` (never
/// answers DATA), `silent-first` (never answers the first DATA; see [`SmtpSink::held`]).
pub fn start_sink_behaving(
    dir: &Path,
    mode: &str,
    port: u16,
    password: &str,
    behaviour: &str,
) -> SmtpSink {
    use std::io::BufRead as _;
    let (cert, key) = (dir.join("smtp-cert.pem"), dir.join("smtp-key.pem"));
    let outdir = dir.join(format!("mail-{port}"));
    std::fs::create_dir_all(&outdir).unwrap();
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/smtp_sink.py"
        ))
        .args([mode, &port.to_string()])
        .args([&cert, &key])
        .args(["alerts", password])
        .arg(&outdir)
        .arg(behaviour)
        .stdout(Stdio::piped())
        // aiosmtpd narrates every session (and refused handshake) on stderr.
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the SMTP server started");
    SmtpSink { child, outdir }
}
