//! What the command line gives operators beyond the commands: shell completions and man
//! pages, both generated from the one CLI definition; and `errors`, which reads a
//! downloaded error log.

mod common;

use std::process::Command;

fn iewatch(args: &[&str]) -> (bool, String) {
    common::iewatch_output(args)
}

#[test]
fn completions_name_every_command_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, script) = iewatch(&["completions", shell]);
        assert!(ok, "{shell}");
        for command in [
            "run",
            "status",
            "history",
            "notify-test",
            "ack",
            "mute",
            "demo",
            "errors",
        ] {
            assert!(script.contains(command), "{shell}: {command} missing");
        }
    }
    let (ok, _) = iewatch(&["completions", "powershell-or-so"]);
    assert!(!ok, "an unknown shell is refused");
}

#[test]
fn man_pages_are_written_for_iewatch_and_each_command_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, said) = iewatch(&["man", dir.path().to_str().unwrap()]);
    assert!(ok, "{said}");
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for expected in [
        "iewatch.1",
        "iewatch-run.1",
        "iewatch-check.1",
        "iewatch-mute.1",
        "iewatch-notify-test.1",
    ] {
        assert!(
            pages.iter().any(|p| p == expected),
            "{expected} in {pages:?}"
        );
    }
    assert!(
        said.contains(&format!("{} man page(s)", pages.len())),
        "{said}"
    );
    let mute = std::fs::read_to_string(dir.path().join("iewatch-mute.1")).unwrap();
    assert!(
        mute.starts_with(".ie") || mute.contains(".TH iewatch-mute 1"),
        "{mute}"
    );
    assert!(
        mute.contains("at most a year"),
        "the help text is the page's"
    );
    // Rendered by man(1) where the machine has it, as `man -l` would show it.
    let rendered = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("iewatch-mute.1"))
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output();
    // No man(1) on the machine: the roff checks above are what there is.
    if let Ok(rendered) = rendered {
        assert!(
            rendered.status.success(),
            "{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains("iewatch mute"), "{text}");
        assert!(text.contains("--for"), "{text}");
    }
}

/// A database with one job, `JobA`, made by the store as the daemon makes it.
async fn database_with_a_job(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("iewatch.db");
    let store = iewatch::store::Writer::open_file(&path).await.unwrap();
    store.load_job("prod", "JobA").await.unwrap();
    store.close().await;
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_database_is_refused_at_once_by_the_daemon_and_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let good = database_with_a_job(dir.path()).await;
    // A zeroed header, as a failed disk or a careless `dd` leaves it, in a file of its
    // own: the pool closed above may still checkpoint into its file after `close`
    // returns, and would write a good first page back.
    let path = dir.path().join("damaged.db");
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[..100].fill(0);
    std::fs::write(&path, bytes).unwrap();
    let config = dir.path().join("iewatch.toml");
    std::fs::write(&config, "[daemon]\ndatabase = \"damaged.db\"\n").unwrap();
    let db = path.to_str().unwrap();
    for args in [
        vec!["run", "-c", config.to_str().unwrap()],
        vec!["status", "--database", db],
        vec!["ack", "JobA", "--database", db],
    ] {
        let started = std::time::Instant::now();
        let (ok, said) = iewatch(&args);
        assert!(!ok, "{args:?}: {said}");
        assert!(
            said.contains("damaged.db") && said.contains("not a SQLite database"),
            "{args:?}: names the file and what is wrong: {said}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{args:?}: at once, not after the pool's timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_read_beside_a_held_write_lock_and_a_change_says_it_is_locked() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let path = database_with_a_job(dir.path()).await;
    sqlx::any::install_default_drivers();
    // Another process's write that does not end (an sqlite3 shell inside BEGIN).
    let mut holder = sqlx::AnyConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();
    let db = path.to_str().unwrap().to_owned();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (ok, said) = iewatch(&args);
            (ok, said, started.elapsed())
        })
    };
    let (ok, said, took) = run(vec!["status".into(), "--database".into(), db.clone()])
        .await
        .unwrap();
    assert!(
        ok && said.contains("JobA"),
        "status reads beside it: {said}"
    );
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    let (ok, said, took) = run(vec!["ack".into(), "JobA".into(), "--database".into(), db])
        .await
        .unwrap();
    assert!(!ok, "{said}");
    assert!(said.contains("locked"), "says why: {said}");
    assert!(
        took < std::time::Duration::from_secs(15),
        "within seconds: {took:?}"
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
}

#[test]
fn errors_reads_a_downloaded_copy_log_into_totals_meanings_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("copylog.xml");
    std::fs::write(
        &log,
        r#"<ErroredEntity Path="photos\a?.jpg"><Category>UploadErrorCloudHttp</Category><ErrorCode>400</ErrorCode><ErrorMessage>The specifed resource name contains invalid characters.</ErrorMessage><Type>File</Type></ErroredEntity><ErroredEntity Path="photos\b.jpg"><Category>UploadErrorCloudHttp</Category><ErrorCode>409</ErrorCode><ErrorMessage>There is currently a lease on the blob and no lease ID was specified in the request.</ErrorMessage><Type>File</Type></ErroredEntity><ErroredEntity Path="iso\c.iso"><Category>UploadErrorDataValidationError</Category><ErrorCode>1</ErrorCode><ErrorMessage>CRC mismatch</ErrorMessage><Type>File</Type></ErroredEntity><CopyLog Summary="Summary"><DriveLogVersion>2021-08-01</DriveLogVersion><DriveId>ZDH7Q2LP</DriveId><Status>Failed</Status><TotalFiles_Blobs>72</TotalFiles_Blobs><FilesErrored>3</FilesErrored></CopyLog>"#,
    )
    .unwrap();
    let path = log.display().to_string();
    let (ok, text) = iewatch(&["errors", "--file", &path]);
    assert!(ok, "{text}");
    for expected in [
        "drive ZDH7Q2LP (copy log 2021-08-01)",
        "files: 3 of 72 failed",
        "2 UploadErrorCloudHttp — Azure Storage refused the upload",
        "1 UploadErrorDataValidationError — the data read at upload does not match",
        "photos\\a?.jpg: UploadErrorCloudHttp 400: The specifed resource name contains invalid characters.",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let (ok, json) = iewatch(&["errors", "--file", &path, "--json"]);
    assert!(ok, "{json}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["failed"], 3);
    assert_eq!(json["entries"][1]["error_code"], "409");
    assert_eq!(json["totals"][0]["code"], "UploadErrorCloudHttp");
    assert_eq!(json["totals"][0]["count"], 2);

    let html = dir.path().join("login.html");
    std::fs::write(&html, "<html><body>Sign in</body></html>").unwrap();
    let (ok, said) = iewatch(&["errors", "--file", &html.display().to_string()]);
    assert!(!ok);
    assert!(
        said.contains("not an Import/Export or Data Box log"),
        "{said}"
    );
}
