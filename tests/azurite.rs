//! The error-log reader against Azurite, Microsoft's storage emulator (npm `azurite`),
//! started here on a loopback port with its own certificate and `--oauth basic`: logs of
//! each documented format seeded by the test are read with the account key (SharedKey),
//! a service SAS and a bearer token from the simulator's Entra ID; refusals, a missing
//! blob, a wrong content type, an XML bomb, broken XML and a log larger than the cap get
//! their answers; and a simulated lifecycle that ends with errors points the daemon at a
//! log in Azurite. `.ci/run` installs Azurite; without it these tests say once what did
//! not run, and under CI (`IEWATCH_REQUIRE_AZURITE`) that is a failure.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use common::{prerequisites::not_run, start_simulator, Receiver, Reply, RunningDaemon};
use hmac::{Hmac, Mac as _};
use http_body_util::Full;
use iewatch::{
    errorlog::{AccountLogs, FetchError, Limits, STORAGE_VERSION},
    http_client::{self, HttpsClient},
    tls,
};
use iewatch_sim::simulator::certs::CertificateAuthority;
use tokio::io::AsyncBufReadExt as _;

const REQUIRE: &str = "IEWATCH_REQUIRE_AZURITE";
/// The storage account Azurite serves (the simulator's logs name it).
const ACCOUNT: &str = "xttest";
/// Its key (base64), given to Azurite in `AZURITE_ACCOUNTS`.
const KEY: &str = "aWV3YXRjaC1henVyaXRlLXRlc3Qta2V5LW9mLXh0dGVzdC0wMTIzNDU2Nzg5YWJj";

fn azurite_bin() -> Option<PathBuf> {
    let local =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/azurite/node_modules/.bin/azurite-blob");
    let node = std::process::Command::new("node").arg("--version").output();
    (local.exists() && node.is_ok_and(|o| o.status.success())).then_some(local)
}

/// A running Azurite, stopped when dropped.
struct Azurite {
    _child: tokio::process::Child,
    /// `https://127.0.0.1:PORT`.
    base: String,
    /// Its CA (PEM file), for `ca_certificate`.
    ca: PathBuf,
    client: HttpsClient,
}

async fn start_azurite(dir: &Path) -> Option<Azurite> {
    let Some(bin) = azurite_bin() else {
        not_run(
            REQUIRE,
            "tests/azurite.rs: Azurite is not installed (Node and `npm install --prefix target/azurite azurite@3.35.0`, as .ci/run does); the error-log reader was not checked against Microsoft's storage emulator",
        );
        return None;
    };
    let ca = CertificateAuthority::generate("azurite test CA").unwrap();
    let (cert, key) = ca.issue_server(&["127.0.0.1".into()]).unwrap();
    for (name, text) in [
        ("cert.pem", &cert),
        ("key.pem", &key),
        ("ca.pem", &ca.cert_pem()),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let mut child = tokio::process::Command::new(bin)
        .args(["--blobHost", "127.0.0.1", "--blobPort", "0", "--location"])
        .arg(dir.join("data"))
        .arg("--cert")
        .arg(dir.join("cert.pem"))
        .arg("--key")
        .arg(dir.join("key.pem"))
        .args([
            "--oauth",
            "basic",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
        ])
        .env("AZURITE_ACCOUNTS", format!("{ACCOUNT}:{KEY}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("azurite starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(at) = line.find("https://127.0.0.1:") {
                return Some(line[at..].trim().trim_end_matches('/').to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("Azurite says where it listens");
    // Keep reading its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let roots = tls::load_certificates(&dir.join("ca.pem")).unwrap();
    let config = tls::client_config(tls::root_store(&roots, false), None).unwrap();
    let client = http_client::build_client(config, Duration::from_secs(5), true);
    Some(Azurite {
        _child: child,
        base,
        ca: dir.join("ca.pem"),
        client,
    })
}

fn hmac(text: &str) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl Azurite {
    /// `https://127.0.0.1:PORT/{account}`.
    fn blob_endpoint(&self) -> String {
        format!("{}/{{account}}", self.base)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{ACCOUNT}/{path}", self.base)
    }

    /// A SharedKey-signed PUT (a container when `body` is None), as the SDKs sign it.
    async fn put(&self, path: &str, body: Option<(&[u8], &str)>) {
        match body {
            Some((bytes, kind)) => {
                let headers = [("x-ms-blob-type", "BlockBlob")];
                let body = Bytes::copy_from_slice(bytes);
                self.signed_put(path, &[], &headers, kind, body).await;
            }
            None => {
                let query = [("restype", "container")];
                self.signed_put(path, &query, &[], "", Bytes::new()).await;
            }
        }
    }

    /// A blob of `count` copies of `block`, put block by block (as the SDKs upload a
    /// large file), then committed with `content_type`.
    async fn put_blocks(&self, path: &str, block: Bytes, count: usize, content_type: &str) {
        let mut list = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for i in 0..count {
            let id = base64::engine::general_purpose::STANDARD.encode(format!("{i:08}"));
            let query = [("blockid", id.as_str()), ("comp", "block")];
            self.signed_put(path, &query, &[], "", block.clone()).await;
            list.push_str(&format!("<Latest>{id}</Latest>"));
        }
        list.push_str("</BlockList>");
        let headers = [("x-ms-blob-content-type", content_type)];
        let query = [("comp", "blocklist")];
        self.signed_put(path, &query, &headers, "application/xml", Bytes::from(list))
            .await;
    }

    /// A PUT signed with the account key: `query` (its values signed as given, sent
    /// percent-encoded), `x-ms-` `headers` in name order.
    async fn signed_put(
        &self,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        content_type: &str,
        body: Bytes,
    ) {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let length = if body.is_empty() {
            String::new()
        } else {
            body.len().to_string()
        };
        let mut canonical: Vec<(&str, &str)> = headers.to_vec();
        canonical.extend([
            ("x-ms-date", date.as_str()),
            ("x-ms-version", STORAGE_VERSION),
        ]);
        canonical.sort();
        let canonical: String = canonical
            .iter()
            .map(|(k, v)| format!("{k}:{v}\n"))
            .collect();
        let mut sorted = query.to_vec();
        sorted.sort();
        let resource: String = sorted.iter().map(|(k, v)| format!("\n{k}:{v}")).collect();
        let to_sign = format!(
            "PUT\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\n{canonical}/{ACCOUNT}/{ACCOUNT}/{path}{resource}"
        );
        let encoded: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.replace('+', "%2B")
                        .replace('/', "%2F")
                        .replace('=', "%3D")
                )
            })
            .collect();
        let uri = if encoded.is_empty() {
            self.url(path)
        } else {
            format!("{}?{}", self.url(path), encoded.join("&"))
        };
        let mut request = http::Request::put(uri)
            .header("x-ms-date", &date)
            .header("x-ms-version", STORAGE_VERSION)
            .header(
                "authorization",
                format!("SharedKey {ACCOUNT}:{}", hmac(&to_sign)),
            );
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let request = request.body(Full::new(body)).unwrap();
        let response =
            http_client::send(&self.client, request, Duration::from_secs(120), 64 * 1024)
                .await
                .unwrap();
        assert!(
            response.status().is_success(),
            "PUT {path}: {} {:?}",
            response.status(),
            response.body()
        );
    }

    /// A service SAS reading `container`, signed as the Blob service checks it.
    fn sas(&self, container: &str) -> String {
        let se = "2030-01-01T00:00:00Z";
        let fields = [
            "rl",
            "",
            se,
            &format!("/blob/{ACCOUNT}/{container}"),
            "",
            "",
            "",
            STORAGE_VERSION,
            "c",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ];
        let sig = hmac(&fields.join("\n"));
        let encoded: String = sig
            .chars()
            .map(|c| match c {
                '+' => "%2B".to_owned(),
                '/' => "%2F".to_owned(),
                '=' => "%3D".to_owned(),
                c => c.to_string(),
            })
            .collect();
        format!("sv={STORAGE_VERSION}&sr=c&sp=rl&se=2030-01-01T00%3A00%3A00Z&sig={encoded}")
    }

    /// A classic account reading Azurite with `secret_key` = `file` (key or SAS).
    fn reader(&self, dir: &Path, secret_key: &str, secret: &str) -> AccountLogs {
        let file = dir.join(format!("{secret_key}.txt"));
        std::fs::write(&file, secret).unwrap();
        let block = format!(
            "[[account]]\nname = \"az\"\nsubscription_id = \"s\"\nstorage_account = \"{ACCOUNT}\"\ncertificate = \"{}\"\nca_certificate = \"{}\"\n{secret_key} = \"{}\"\nblob_endpoint = \"{}\"\n",
            dir.join("management.pem").display(),
            self.ca.display(),
            file.display(),
            self.blob_endpoint()
        );
        reader_from(dir, &block)
    }
}

/// The reader of `block`'s account, with a management certificate for a classic one.
fn reader_from(dir: &Path, block: &str) -> AccountLogs {
    if !dir.join("management.pem").exists() {
        let ca = CertificateAuthority::generate("management").unwrap();
        let (cert, key) = ca.issue_client("management").unwrap();
        std::fs::write(dir.join("management.pem"), format!("{cert}{key}")).unwrap();
    }
    common::account_logs(dir, block)
}

const DRIVE_LOG_2014: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<DriveLog Version="2014-11-01">
  <DriveId>9WM35C2V</DriveId>
  <Blob Status="FileNotFound">
    <BlobPath>pictures/animals/koala.jpg</BlobPath>
    <FilePath>\animals\koala.jpg</FilePath>
    <Length>30310</Length>
    <ImportDisposition Status="Cancelled">rename</ImportDisposition>
    <BlockList><Block Offset="0" Length="6062" Id="MDAwMDAw" Hash=" 3C9A2E5C9A2B1C8F5D4E3A2B1C0D9E8F" Status="Cancelled"/></BlockList>
  </Blob>
  <Blob Status="CompletedWithErrors">
    <BlobPath>pictures/animals/kangaroo.jpg</BlobPath>
    <FilePath>\animals\kangaroo.jpg</FilePath>
    <Length>4194304</Length>
    <PageRangeList><PageRange Offset="0" Length="512" Hash="11" Status="Corrupted"/></PageRangeList>
  </Blob>
  <Status>CompletedWithErrors</Status>
</DriveLog>
"#;

const DRIVE_LOG_2018: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<DriveLog Version="2018-10-01">
  <DriveId>184020D95632</DriveId>
  <Summary><ValidationErrors><None Count="3"/></ValidationErrors><CopyErrors><ContainerRenamed Count="1" Description="Renamed the container as the original name did not follow Azure conventions."/></CopyErrors></Summary>
  <Blob Status="ContainerRenamed"><BlobPath>databox-c1/file.txt</BlobPath><OriginalFilePath>\DataBox_c1\file.txt</OriginalFilePath><SizeInBytes>12</SizeInBytes></Blob>
  <Status>CompletedWithErrors</Status>
</DriveLog>
"#;

const COPY_LOG_2021: &str = r#"<ErroredEntity Path="iewatch/a?.jpg"><Category>UploadErrorCloudHttp</Category><ErrorCode>400</ErrorCode><ErrorMessage>The specified blob name is invalid.</ErrorMessage><Type>File</Type><Level>Error</Level></ErroredEntity>
<ErroredEntity Path="iewatch/b.vhd"><Category>UploadErrorManagedConversionError</Category><ErrorCode>409</ErrorCode><ErrorMessage>The size of the blob being imported is invalid.</ErrorMessage><Type>File</Type><Level>Error</Level></ErroredEntity>
<CopyLog Summary="Summary"><Status>Failed</Status><TotalFiles_Blobs>5521</TotalFiles_Blobs><FilesErrored>2</FilesErrored></CopyLog>
"#;

fn limits() -> Limits {
    Limits {
        max_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_format_is_read_with_the_key_a_sas_and_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let Some(azurite) = start_azurite(dir.path()).await else {
        return;
    };
    azurite.put("waimportexport", None).await;
    azurite.put("databoxcopylog", None).await;
    let logs = [
        (
            "waimportexport/waies/J_9WM35C2V_20130921-034307-902_error.xml",
            DRIVE_LOG_2014,
            "FileNotFound",
        ),
        (
            "waimportexport/waies/J_184020D95632_error.xml",
            DRIVE_LOG_2018,
            "ContainerRenamed",
        ),
        (
            "databoxcopylog/J_184020D95632_CopyLog_1a2b.xml",
            COPY_LOG_2021,
            "UploadErrorCloudHttp",
        ),
    ];
    for (path, body, _) in logs {
        azurite
            .put(path, Some((body.as_bytes(), "application/xml")))
            .await;
    }
    let by_key = azurite.reader(dir.path(), "storage_key_file", KEY);
    let by_sas_waie = azurite.reader(
        dir.path(),
        "error_log_sas_file",
        &azurite.sas("waimportexport"),
    );
    // A token from the simulator's Entra ID for Storage: Azurite checks its issuer,
    // audience and lifetime.
    let sim = start_simulator(
        common::scenario("import-lifecycle.toml"),
        &dir.path().join("sim"),
    )
    .await;
    let arm = sim
        .arm_account_block("az")
        .replace(&sim.blob_endpoint(), &azurite.blob_endpoint())
        .replace(
            &format!("ca_certificate = \"{}\"", sim.certs.ca.display()),
            &format!(
                "ca_certificate = \"{}\"",
                combined_ca(dir.path(), &sim.certs.ca, &azurite.ca).display()
            ),
        );
    let by_token = reader_from(dir.path(), &arm);
    for (path, _, code) in logs {
        let url = azurite.url(path);
        for (how, reader) in [("key", &by_key), ("token", &by_token)] {
            let summary = reader
                .read(&url, limits(), Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("{path} by {how}: {e}"));
            assert!(
                summary.totals.contains_key(code),
                "{path} by {how}: {:?}",
                summary.totals
            );
        }
    }
    let drive_log = azurite.url(logs[0].0);
    let s = by_sas_waie
        .read(&drive_log, limits(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (s.entries_total(), s.status.as_deref()),
        (2, Some("CompletedWithErrors"))
    );
    assert_eq!(s.entries[1].part.as_deref(), Some("PageRange Corrupted"));
    // The SAS is for its container only.
    match by_sas_waie
        .read(&azurite.url(logs[2].0), limits(), Duration::from_secs(10))
        .await
    {
        Err(FetchError::Refused {
            status: 403,
            advice,
            ..
        }) => {
            assert!(
                advice.contains("error_log_sas_file was refused"),
                "{advice}"
            )
        }
        other => panic!("a SAS of another container: {other:?}"),
    }
    let copy = by_key
        .read(&azurite.url(logs[2].0), limits(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        (copy.files_total, copy.files_errored),
        (Some(5521), Some(2))
    );
    sim.stop().await;
}

/// One PEM file trusting both the simulator's CA (tokens) and Azurite's.
fn combined_ca(dir: &Path, a: &Path, b: &Path) -> PathBuf {
    let path = dir.join("both-ca.pem");
    let text = std::fs::read_to_string(a).unwrap() + &std::fs::read_to_string(b).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_hostile_logs_in_azurite_get_answers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(azurite) = start_azurite(dir.path()).await else {
        return;
    };
    azurite.put("waimportexport", None).await;
    let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><DriveLog><DriveId>&lol2;</DriveId></DriveLog>"#;
    let cut = &DRIVE_LOG_2014[..DRIVE_LOG_2014.len() / 2];
    azurite
        .put(
            "waimportexport/bomb.xml",
            Some((bomb.as_bytes(), "application/xml")),
        )
        .await;
    azurite
        .put(
            "waimportexport/cut.xml",
            Some((cut.as_bytes(), "application/xml")),
        )
        .await;
    azurite
        .put(
            "waimportexport/page.xml",
            Some((b"<html><body>Sign in</body></html>", "text/html")),
        )
        .await;
    // A log larger than the reader's cap (16 MiB here): counted as far as read.
    let entry = "<ErroredEntity Path=\"a\\b.txt\"><Category>UploadErrorWin32</Category><ErrorCode>5</ErrorCode></ErroredEntity>\n";
    let big = entry.repeat(24 * 1024 * 1024 / entry.len());
    azurite
        .put(
            "waimportexport/big.xml",
            Some((big.as_bytes(), "application/xml")),
        )
        .await;

    let reader = azurite.reader(dir.path(), "storage_key_file", KEY);
    let read = |path: &str| reader.read_owned(azurite.url(path));
    match read("waimportexport/bomb.xml").await {
        Err(FetchError::Unreadable(e)) => assert!(e.to_string().contains("DOCTYPE"), "{e}"),
        other => panic!("bomb: {other:?}"),
    }
    match read("waimportexport/cut.xml").await {
        Err(FetchError::Unreadable(e)) => {
            assert!(e.to_string().starts_with("malformed XML"), "{e}")
        }
        other => panic!("cut: {other:?}"),
    }
    match read("waimportexport/page.xml").await {
        Err(FetchError::NotXml(kind)) => assert_eq!(kind, "text/html"),
        other => panic!("html: {other:?}"),
    }
    match read("waimportexport/none.xml").await {
        Err(FetchError::Refused {
            status: 404, code, ..
        }) => assert_eq!(code, "BlobNotFound"),
        other => panic!("missing: {other:?}"),
    }
    let big = read("waimportexport/big.xml").await.unwrap();
    assert!(
        big.cut_short && big.entries.len() == 50,
        "bounded: {:?}",
        big.totals
    );
    let wrong = azurite.reader(dir.path(), "storage_key_file", &KEY.replace('a', "b"));
    match wrong
        .read(
            &azurite.url("waimportexport/bomb.xml"),
            limits(),
            Duration::from_secs(10),
        )
        .await
    {
        // Azurite says 400 InvalidAuthenticationInfo where Azure says 403
        // AuthenticationFailed: the advice is the same.
        Err(FetchError::Refused { status, advice, .. }) => {
            assert!(matches!(status, 400 | 403), "{status}");
            assert!(advice.contains("storage_key_file was refused"), "{advice}");
        }
        other => panic!("wrong key: {other:?}"),
    }
}

trait ReadOwned {
    fn read_owned(
        &self,
        url: String,
    ) -> impl std::future::Future<Output = Result<iewatch::errorlog::Summary, FetchError>>;
}

impl ReadOwned for AccountLogs {
    async fn read_owned(&self, url: String) -> Result<iewatch::errorlog::Summary, FetchError> {
        self.read(&url, limits(), Duration::from_secs(20)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifecycle_that_ends_with_errors_is_explained_from_azurite() {
    let dir = tempfile::tempdir().unwrap();
    let Some(azurite) = start_azurite(dir.path()).await else {
        return;
    };
    azurite.put("waimportexport", None).await;
    azurite
        .put(
            "waimportexport/waies/MySampleJob_9WM3NZFS_error.xml",
            Some((
                DRIVE_LOG_2014.replace("9WM35C2V", "9WM3NZFS").as_bytes(),
                "application/xml",
            )),
        )
        .await;
    let mut scenario = common::scenario("import-lifecycle.toml");
    scenario.blob_host = Some(azurite.base.trim_start_matches("https://").to_owned());
    let sim = start_simulator(scenario, &dir.path().join("sim")).await;
    sim.set_time(Some(Duration::from_secs(5 * 86_400)));
    std::fs::write(dir.path().join("key"), KEY).unwrap();
    let block = sim
        .account_block("sim")
        .replace(&sim.blob_endpoint(), &azurite.blob_endpoint())
        .replace(
            &sim.certs.storage_key.display().to_string(),
            &dir.path().join("key").display().to_string(),
        )
        .replace(
            &format!("ca_certificate = \"{}\"", sim.certs.ca.display()),
            &format!(
                "ca_certificate = \"{}\"",
                combined_ca(dir.path(), &sim.certs.ca, &azurite.ca).display()
            ),
        );
    let hook = Receiver::start(|_| Reply::Status(204)).await;
    let config = dir.path().join("iewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndatabase = \"{}\"\npoll_interval = \"1s\"\n\n{block}\n[[job]]\naccount = \"sim\"\nname = \"MySampleJob\"\n\n[[webhook]]\nname = \"hook\"\nurl = \"http://{}/\"\nsecret = \"whsec_dGVzdHNlY3JldA==\"\nevents = [\"drive.errors\"]\n",
            dir.path().join("iewatch.db").display(),
            hook.addr
        ),
    )
    .unwrap();
    let daemon = RunningDaemon::start(&config).await;
    let delivered = common::wait_until(Duration::from_secs(30), || {
        !hook.seen.lock().unwrap().is_empty()
    })
    .await;
    daemon.stop().await;
    assert!(delivered, "drive.errors delivered");
    let data = hook.seen.lock().unwrap()[0].json()["data"].clone();
    assert_eq!(
        data["summary"],
        "2 files failed: 1 CompletedWithErrors, 1 FileNotFound; first: \\animals\\koala.jpg (FileNotFound)"
    );
    assert!(data["log"].as_str().unwrap().starts_with(&azurite.base));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_one_gib_is_read_to_the_cap_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let Some(azurite) = start_azurite(dir.path()).await else {
        return;
    };
    azurite.put("waimportexport", None).await;
    let entry = "<ErroredEntity Path=\"a\\b.txt\"><Category>UploadErrorWin32</Category><ErrorCode>5</ErrorCode></ErroredEntity>\n";
    // 64 MiB of whole entries, sixteen times: a 1 GiB copy log.
    let block = Bytes::from(entry.repeat(64 * 1024 * 1024 / entry.len()));
    let started = std::time::Instant::now();
    azurite
        .put_blocks("waimportexport/huge.xml", block, 16, "application/xml")
        .await;
    let uploaded = started.elapsed();
    let reader = azurite.reader(dir.path(), "storage_key_file", KEY);
    let started = std::time::Instant::now();
    let summary = reader
        .read(
            &azurite.url("waimportexport/huge.xml"),
            limits(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let read = started.elapsed();
    assert!(summary.cut_short, "read to the cap, not to the end");
    assert_eq!(summary.entries.len(), 50, "entries kept are bounded");
    assert!(
        summary.totals["UploadErrorWin32"] > 100_000,
        "{:?}",
        summary.totals
    );
    // Reading stops at the cap: far less time than the upload of the whole GiB took.
    assert!(read < uploaded, "read {read:?}, upload {uploaded:?}");
}
