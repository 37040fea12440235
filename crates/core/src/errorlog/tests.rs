//! Unit tests of `errorlog`: the documented samples of each format, and hostile logs.

use super::*;

fn read(text: &str) -> Summary {
    summarise(text.as_bytes(), Limits::default()).unwrap()
}

const DRIVE_LOG_2014: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<DriveLog Version="2014-11-01">
  <DriveId>9WM35C2V</DriveId>
  <Blob Status="FileNotFound">
    <BlobPath>pictures/animals/koala.jpg</BlobPath>
    <FilePath>\animals\koala.jpg</FilePath>
    <Length>30310</Length>
    <ImportDisposition Status="Cancelled">rename</ImportDisposition>
    <BlockList><Block Offset="0" Length="6062" Id="x" Hash=" 3C5C3" Status="Cancelled"/></BlockList>
  </Blob>
  <Blob Status="CompletedWithErrors">
    <BlobPath>pictures/animals/kangaroo.jpg</BlobPath>
    <FilePath>\animals\kangaroo.jpg</FilePath>
    <Length>7000</Length>
    <PageRangeList>
      <PageRange Offset="0" Length="512" Hash="00" Status="Completed"/>
      <PageRange Offset="512" Length="512" Hash="11" Status="Corrupted"/>
    </PageRangeList>
  </Blob>
  <Blob Status="Completed">
    <BlobPath>pictures/fine.jpg</BlobPath>
    <FilePath>\fine.jpg</FilePath>
    <Length>1</Length>
  </Blob>
  <Status>CompletedWithErrors</Status>
</DriveLog>"#;

#[test]
fn a_2014_drive_log_gives_its_failed_blobs_parts_and_drive_status() {
    let s = read(DRIVE_LOG_2014);
    assert_eq!(s.format, Some(Format::DriveLog));
    assert_eq!(s.version.as_deref(), Some("2014-11-01"));
    assert_eq!(s.drive_id.as_deref(), Some("9WM35C2V"));
    assert_eq!(s.status.as_deref(), Some("CompletedWithErrors"));
    assert_eq!(s.entries_total(), 2, "the completed blob is not a failure");
    assert_eq!(s.totals.get("FileNotFound"), Some(&1));
    assert_eq!(s.totals.get("CompletedWithErrors"), Some(&1));
    assert_eq!(s.bytes_failed, 37_310);
    let koala = &s.entries[0];
    assert_eq!(koala.path, "pictures/animals/koala.jpg");
    assert_eq!(koala.file_path.as_deref(), Some("\\animals\\koala.jpg"));
    assert_eq!(koala.part.as_deref(), Some("ImportDisposition Cancelled"));
    assert_eq!(s.entries[1].part.as_deref(), Some("PageRange Corrupted"));
    assert_eq!(
        meaning("FileNotFound"),
        Some("the file is not on the drive")
    );
    assert!(!s.cut_short);
}

#[test]
fn a_2018_drive_log_reads_its_summary_counts_and_files() {
    let s = read(
        r#"<DriveLog Version="2018-10-01"><DriveId>184020D95632</DriveId>
        <Summary><ValidationErrors><None Count="3"/></ValidationErrors>
        <CopyErrors><ContainerRenamed Count="3" Description="Renamed the container as the original container name does not follow Azure conventions."/></CopyErrors></Summary>
        <Blob Status="ContainerRenamed"><BlobPath>DataBox-a1/x.vhd</BlobPath><OriginalFilePath>\ContainerRenamed\x.vhd</OriginalFilePath><SizeInBytes>65536</SizeInBytes></Blob>
        <File Status="Corrupted"><FileStoragePath>share/f.txt</FileStoragePath><FileRangeList><FileRange Offset="0" Length="10" Status="Corrupted"/></FileRangeList></File>
        <Status>CompletedWithErrors</Status></DriveLog>"#,
    );
    assert_eq!(s.version.as_deref(), Some("2018-10-01"));
    assert_eq!(s.summary_counts.get("ContainerRenamed"), Some(&3));
    assert!(!s.summary_counts.contains_key("None"));
    assert_eq!(s.entries_total(), 2);
    assert_eq!(
        s.entries[0].file_path.as_deref(),
        Some("\\ContainerRenamed\\x.vhd")
    );
    assert_eq!(s.entries[1].path, "share/f.txt");
    assert_eq!(s.entries[1].part.as_deref(), Some("FileRange Corrupted"));
    assert_eq!(s.bytes_failed, 65_536);
}

#[test]
fn a_copy_log_fragment_without_a_root_gives_entities_and_the_summary() {
    let s = read(
        r#"<ErroredEntity Path="iso\samsungssd.iso">
  <Category>UploadErrorCloudHttp</Category>
  <ErrorCode>409</ErrorCode>
  <ErrorMessage>The blob type is invalid for this operation.</ErrorMessage>
  <Type>File</Type>
</ErroredEntity><ErroredEntity Path="photos\a?.jpg"><Category>BlobRenamed</Category><ErrorCode>1</ErrorCode><ErrorMessage>The original blob has been renamed to: DataBox-1 :from: a?.jpg</ErrorMessage><Type>File</Type></ErroredEntity><CopyLog Summary="Summary">
  <DriveLogVersion>2021-08-01</DriveLogVersion>
  <DriveId>ZDH7Q2LP</DriveId>
  <Status>Failed</Status>
  <TotalFiles_Blobs>72</TotalFiles_Blobs>
  <FilesErrored>2</FilesErrored>
</CopyLog>"#,
    );
    assert_eq!(s.format, Some(Format::CopyLog));
    assert_eq!(s.version.as_deref(), Some("2021-08-01"));
    assert_eq!(s.drive_id.as_deref(), Some("ZDH7Q2LP"));
    assert_eq!(s.status.as_deref(), Some("Failed"));
    assert_eq!((s.files_total, s.files_errored), (Some(72), Some(2)));
    assert_eq!(s.entries_total(), 2);
    let first = &s.entries[0];
    assert_eq!(first.path, "iso\\samsungssd.iso");
    assert_eq!(first.code, "UploadErrorCloudHttp");
    assert_eq!(first.error_code.as_deref(), Some("409"));
    assert_eq!(
        first.message.as_deref(),
        Some("The blob type is invalid for this operation.")
    );
    assert_eq!(s.entries[1].path, "photos\\a?.jpg");
    assert!(meaning("BlobRenamed").is_some());
    assert_eq!(meaning("SomethingNew"), None, "no meaning is made up");
}

#[test]
fn a_success_only_copy_log_has_no_entries() {
    let s = read(
        r#"<?xml version="1.0"?><CopyLog Summary="Summary"><Status>Succeeded</Status><TotalFiles>5</TotalFiles><FilesErrored>0</FilesErrored></CopyLog>"#,
    );
    assert_eq!(s.entries_total(), 0);
    assert_eq!(s.files_errored, Some(0));
}

#[test]
fn entries_past_the_cap_are_counted_not_kept_and_text_is_bounded() {
    let mut log = String::from("<DriveLog Version=\"2014-11-01\">");
    for i in 0..500 {
        log.push_str(&format!(
            "<Blob Status=\"FileNameInvalid\"><BlobPath>c/{}</BlobPath></Blob>",
            "x".repeat(i * 10)
        ));
    }
    log.push_str("<Status>CompletedWithErrors</Status></DriveLog>");
    let limits = Limits {
        max_entries: 10,
        max_text: 100,
        ..Limits::default()
    };
    let s = summarise(log.as_bytes(), limits).unwrap();
    assert_eq!(s.entries.len(), 10);
    assert_eq!(s.totals.get("FileNameInvalid"), Some(&500));
    assert!(s.entries.iter().all(|e| e.path.chars().count() <= 100));
}

#[test]
fn a_log_longer_than_the_byte_cap_is_summarised_as_far_as_read_in_bounded_memory() {
    // A generated 1 GiB log, never held in memory: the cap stops reading at 16 MiB.
    struct Endless {
        entry: Vec<u8>,
        at: usize,
        produced: u64,
    }
    impl std::io::Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.produced >= 1 << 30 {
                return Ok(0);
            }
            let mut n = 0;
            while n < buf.len() {
                buf[n] = self.entry[self.at];
                self.at = (self.at + 1) % self.entry.len();
                n += 1;
            }
            self.produced += n as u64;
            Ok(n)
        }
    }
    let endless = Endless {
        entry: b"<ErroredEntity Path=\"a\\b.txt\"><Category>UploadErrorWin32</Category><ErrorCode>5</ErrorCode></ErroredEntity>".to_vec(),
        at: 0,
        produced: 0,
    };
    let limits = Limits {
        max_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    };
    let s = summarise(std::io::BufReader::new(endless), limits).unwrap();
    assert!(s.cut_short);
    assert_eq!(s.entries.len(), 50);
    let total = s.totals["UploadErrorWin32"];
    assert!(total > 100_000, "{total} entries counted in 16 MiB");
}

#[test]
fn an_xml_bomb_is_refused_and_entities_are_never_expanded() {
    let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<DriveLog Version="2014-11-01"><DriveId>&lol2;</DriveId></DriveLog>"#;
    assert!(matches!(
        summarise(bomb.as_bytes(), Limits::default()),
        Err(ErrorLogError::DocType)
    ));
    // Without a DTD an undefined entity stays as written.
    let s = read(r#"<DriveLog><DriveId>&lol2;&amp;&#65;</DriveId></DriveLog>"#);
    assert_eq!(s.drive_id.as_deref(), Some("&lol2;&A"));
}

#[test]
fn malformed_and_foreign_documents_say_what_they_are() {
    for broken in [
        "<DriveLog><Blob Status=\"x\"></DriveLog>",
        "<DriveLog><DriveId>x</Drive></DriveLog>",
    ] {
        let error = summarise(broken.as_bytes(), Limits::default()).unwrap_err();
        assert!(
            matches!(error, ErrorLogError::Malformed { .. }),
            "{broken}: {error}"
        );
    }
    let html = summarise(
        "<html><body>Sign in</body></html>".as_bytes(),
        Limits::default(),
    )
    .unwrap_err();
    assert_eq!(
        html.to_string(),
        "not an Import/Export or Data Box log (first element <html>)"
    );
    let empty = read("");
    assert_eq!(empty.format, None);
}

#[test]
fn stray_spaces_and_control_characters_in_values_are_taken_in_stride() {
    let s = read("<DriveLog Version = \" 2014-11-01 \"><Blob Status=\" FileNotFound\"><BlobPath>a\u{7}b</BlobPath></Blob></DriveLog>");
    assert_eq!(s.version.as_deref(), Some("2014-11-01"));
    assert_eq!(s.totals.get("FileNotFound"), Some(&1));
    assert_eq!(s.entries[0].path, "ab");
}

#[test]
fn a_log_that_stops_inside_an_element_is_broken_not_short() {
    let cut = "<DriveLog Version=\"2014-11-01\"><DriveId>D1</DriveId><Blob Status=\"FileNotFound\"><BlobPath>a</BlobPath></Blob>";
    match summarise(cut.as_bytes(), Limits::default()) {
        Err(ErrorLogError::Malformed { reason, .. }) => {
            assert_eq!(reason, "the log ends inside <DriveLog>")
        }
        other => panic!("{other:?}"),
    }
    // A copy log is a fragment: it may end between entries.
    let fragment =
        "<ErroredEntity Path=\"a\"><Category>UploadErrorWin32</Category></ErroredEntity>";
    assert_eq!(read(fragment).entries_total(), 1);
}
