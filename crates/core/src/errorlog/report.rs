//! What a `drive.errors` event says: the log's summary in the person's terms (how many
//! failed, by code with the documented meaning, the first few entries), or why the log
//! could not be read. Bounded: it is stored in the database and sent in every payload.

use serde::{Deserialize, Serialize};

use super::{meaning, Entry, Format, Summary};

/// Entries an event carries (the stored summary keeps [`super::Limits::max_entries`]).
pub const FIRST_IN_EVENT: usize = 10;

/// One code and how many entries had it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeCount {
    /// The status or category, as the log spells it.
    pub code: String,
    /// How many entries.
    pub count: u64,
    /// The documented meaning, if the code is documented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meaning: Option<String>,
}

/// One failed entry, for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedEntry {
    /// Where it went in Azure (blob or file path), or the copy log's path.
    pub path: String,
    /// Where it was on the drive, if the log says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    /// The status or category.
    pub code: String,
    /// The documented meaning, or the log's own message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meaning: Option<String>,
    /// The copy log's own words: its numeric code and message (`400: The specified blob
    /// name is invalid.`), or the failing part of a blob (`PageRange Corrupted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A drive's (or destination account's) error log, as an event and a stored row carry it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The log's URL, never with a SAS.
    pub log: String,
    /// `DriveLog 2014-11-01`, `CopyLog 2021-08-01`, when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The drive's overall status in the log (`CompletedWithErrors`, `DiskNotFound`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Entries that failed (all read, not only those listed).
    pub failed: u64,
    /// By code, most first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub totals: Vec<CodeCount>,
    /// The first failed entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first: Vec<FailedEntry>,
    /// Files the copy covered, if the log says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_total: Option<u64>,
    /// Bytes of the failed entries, where the log gives lengths.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_failed: u64,
    /// The log was longer than iewatch reads; the figures cover the part read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut_short: bool,
    /// Why the log could not be read; everything above is then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Report {
    /// The report of a log read, with at most `first` entries.
    pub fn read(log: &str, summary: &Summary, first: usize) -> Report {
        let mut totals: Vec<CodeCount> = summary
            .totals
            .iter()
            .map(|(code, count)| CodeCount {
                code: code.clone(),
                count: *count,
                meaning: meaning(code).map(str::to_owned),
            })
            .collect();
        totals.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
        let format = summary.format.map(|f| {
            let name = match f {
                Format::DriveLog => "DriveLog",
                Format::CopyLog => "CopyLog",
            };
            match &summary.version {
                Some(v) => format!("{name} {v}"),
                None => name.to_owned(),
            }
        });
        Report {
            log: log.to_owned(),
            format,
            status: summary.status.clone(),
            failed: summary
                .files_errored
                .unwrap_or(0)
                .max(summary.entries_total()),
            totals,
            first: summary
                .entries
                .iter()
                .take(first)
                .map(failed_entry)
                .collect(),
            files_total: summary.files_total,
            bytes_failed: summary.bytes_failed,
            cut_short: summary.cut_short,
            error: None,
        }
    }

    /// The report of a log that could not be read, and why.
    pub fn unreadable(log: &str, why: &str) -> Report {
        Report {
            log: log.to_owned(),
            error: Some(why.to_owned()),
            ..Report::default()
        }
    }

    /// The same report with only the first `n` entries (an event's share of a stored one).
    pub fn with_first(mut self, n: usize) -> Report {
        self.first.truncate(n);
        self
    }

    /// One line: `3 files failed: 2 FileNameInvalid, 1 Corrupted; first: \photos\a?.jpg
    /// (FileNameInvalid)`, or `log not read: 403 ...`.
    pub fn headline(&self) -> String {
        if let Some(error) = &self.error {
            return format!("log not read: {error}");
        }
        if self.failed == 0 {
            return match &self.status {
                Some(status) => format!("no failed file listed; drive status {status}"),
                None => "no failed file listed".into(),
            };
        }
        let noun = if self.failed == 1 { "file" } else { "files" };
        let mut line = format!("{} {noun} failed", self.failed);
        let codes: Vec<String> = self
            .totals
            .iter()
            .take(4)
            .map(|c| format!("{} {}", c.count, c.code))
            .collect();
        if !codes.is_empty() {
            line.push_str(": ");
            line.push_str(&codes.join(", "));
            if self.totals.len() > 4 {
                line.push_str(", …");
            }
        }
        if let Some(first) = self.first.first() {
            let path = first.file_path.as_deref().unwrap_or(&first.path);
            line.push_str(&format!("; first: {path} ({})", first.code));
        }
        if self.cut_short {
            line.push_str(" (log longer than read)");
        }
        line
    }
}

fn failed_entry(entry: &Entry) -> FailedEntry {
    let said = match (&entry.error_code, &entry.message) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (Some(code), None) => Some(code.clone()),
        (None, Some(message)) => Some(message.clone()),
        (None, None) => None,
    };
    FailedEntry {
        detail: said.or_else(|| entry.part.clone()),
        path: entry.path.clone(),
        file_path: entry.file_path.clone(),
        code: entry.code.clone(),
        meaning: meaning(&entry.code)
            .map(str::to_owned)
            .or_else(|| entry.message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headline_says_counts_codes_and_the_first_file() {
        let log = r#"<DriveLog Version="2014-11-01"><DriveId>D1</DriveId>
            <Blob Status="FileNameInvalid"><BlobPath>p/a?.jpg</BlobPath><FilePath>\p\a?.jpg</FilePath><Length>10</Length></Blob>
            <Blob Status="FileNameInvalid"><BlobPath>p/b*.jpg</BlobPath><FilePath>\p\b*.jpg</FilePath><Length>5</Length></Blob>
            <Blob Status="Corrupted"><BlobPath>v/c.mp4</BlobPath><FilePath>\v\c.mp4</FilePath></Blob>
            <Status>CompletedWithErrors</Status></DriveLog>"#;
        let summary = crate::errorlog::summarise(log.as_bytes(), Default::default()).unwrap();
        let report = Report::read("https://a.blob.core.windows.net/c/l.xml", &summary, 50);
        assert_eq!(
            report.headline(),
            r"3 files failed: 2 FileNameInvalid, 1 Corrupted; first: \p\a?.jpg (FileNameInvalid)"
        );
        assert_eq!((report.bytes_failed, report.first.len()), (15, 3));
        assert_eq!(report.clone().with_first(1).first.len(), 1);
        assert_eq!(
            report.totals[0].meaning.as_deref(),
            Some("the file name is not valid")
        );
        let unread = Report::unreadable("https://a/c/l.xml", "404 BlobNotFound: gone");
        assert_eq!(unread.headline(), "log not read: 404 BlobNotFound: gone");
        let one = Report {
            failed: 1,
            ..Report::default()
        };
        assert_eq!(one.headline(), "1 file failed");
    }
}
