//! What failed, from the service's own error logs: the Import/Export drive log
//! (`DriveLog` 2014-11-01 with a `Status` per blob; 2018-10-01 adding a summary of counts
//! and Azure Files entries) and the copy log of Data Box and of today's Import/Export
//! (2021-08-01: a fragment of `<ErroredEntity>` elements and a `<CopyLog>` summary, no
//! root). Read as a stream: bounded in bytes read, entries kept and text kept per field,
//! totals counted over everything read; no entity is ever expanded and a DTD is refused.
//! Lenient where the documented samples are (stray spaces in attributes), strict in what
//! it reports: a code it does not know is reported as given, without a made-up meaning.

mod access;
mod fetch;
mod meanings;
mod report;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, io::BufRead};

use quick_xml::events::{BytesStart, Event};

pub use access::AccountLogs;
pub use fetch::{
    account_of, read_log, shared_key_signature, Access, FetchError, STORAGE_SCOPE, STORAGE_VERSION,
};
pub use meanings::meaning;
pub use report::{CodeCount, FailedEntry, Report, FIRST_IN_EVENT};

/// How much of a log is read and kept.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes read at most; a longer log is summarised as far as read, and says so.
    pub max_bytes: u64,
    /// Entries kept in full (the first ones); all are counted in the totals.
    pub max_entries: usize,
    /// Characters kept of any one value (a path, a message).
    pub max_text: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 256 * 1024 * 1024,
            max_entries: 50,
            max_text: 1024,
        }
    }
}

/// Which of the documented formats a log is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `<DriveLog>` (versions 2014-11-01 and 2018-10-01).
    DriveLog,
    /// The copy log (`<ErroredEntity>`… `<CopyLog Summary="Summary">`), version 2021-08-01
    /// and Data Box's.
    CopyLog,
}

/// One failed (or renamed) blob, file or entity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Where it went in Azure (`BlobPath`, `FileStoragePath`) or the copy log's `Path`.
    pub path: String,
    /// Where it was on the drive (`FilePath`, `OriginalFilePath`), if the log says.
    pub file_path: Option<String>,
    /// The status or category (`FileNameInvalid`, `UploadErrorCloudHttp`, ...).
    pub code: String,
    /// The copy log's numeric `ErrorCode` (an HTTP status, a Win32 code, 1 for renames).
    pub error_code: Option<String>,
    /// The copy log's `ErrorMessage`.
    pub message: Option<String>,
    /// The first failing part inside a blob (`PageRange Corrupted`, `Properties Failed`).
    pub part: Option<String>,
}

/// A log, summarised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The format, once its first element was seen.
    pub format: Option<Format>,
    /// `Version` / `DriveLogVersion`, if given.
    pub version: Option<String>,
    /// The drive's serial number.
    pub drive_id: Option<String>,
    /// The drive's (or copy's) overall status.
    pub status: Option<String>,
    /// The first entries, up to [`Limits::max_entries`].
    pub entries: Vec<Entry>,
    /// Every entry read, by code.
    pub totals: BTreeMap<String, u64>,
    /// Counts by category from the log's own summary (`<ValidationErrors>`,
    /// `<CopyErrors>`), which may cover more than the entries listed.
    pub summary_counts: BTreeMap<String, u64>,
    /// `TotalFiles` / `TotalFiles_Blobs`, if given.
    pub files_total: Option<u64>,
    /// `FilesErrored`, if given.
    pub files_errored: Option<u64>,
    /// Bytes of the failed entries, where the log gives their length.
    pub bytes_failed: u64,
    /// True when the log was longer than [`Limits::max_bytes`]: the summary covers the
    /// part read.
    pub cut_short: bool,
}

impl Summary {
    /// How many entries were read in all.
    pub fn entries_total(&self) -> u64 {
        self.totals.values().sum()
    }
}

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ErrorLogError {
    /// Not XML, or XML broken at this byte.
    #[error("malformed XML at byte {position}: {reason}")]
    Malformed {
        /// Where, in bytes from the start.
        position: u64,
        /// What the parser said.
        reason: String,
    },
    /// A `<!DOCTYPE>`: no documented log has one, and its entities are never expanded.
    #[error("the log has a DOCTYPE, which no documented log format has: refused")]
    DocType,
    /// Well-formed, but neither a drive log nor a copy log.
    #[error("not an Import/Export or Data Box log (first element <{0}>)")]
    NotALog(String),
    /// Reading failed.
    #[error("reading the log: {0}")]
    Read(#[from] std::io::Error),
}

/// Where the parser is inside the log.
#[derive(Default)]
struct Cursor {
    /// Element names from the root down (local names).
    path: Vec<String>,
    /// Text of the element being read.
    text: String,
    /// The entry being read, and whether it counts (a `Blob` whose status is not
    /// `Completed`, every `ErroredEntity`).
    entry: Option<(Entry, bool)>,
    /// Length of the entry's blob, if given.
    entry_length: Option<u64>,
}

/// Reads a log of either format from `input`, within `limits`.
///
/// # Errors
/// See [`ErrorLogError`]. A log cut short by `max_bytes` is not an error: the summary
/// says `cut_short`.
pub fn summarise(input: impl BufRead, limits: Limits) -> Result<Summary, ErrorLogError> {
    let counted = CountingRead {
        inner: input,
        remaining: limits.max_bytes,
        cut: false,
    };
    let mut reader = quick_xml::Reader::from_reader(counted);
    reader.config_mut().trim_text(true);
    let mut summary = Summary::default();
    let mut cursor = Cursor::default();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let event = match reader.read_event_into(&mut buf) {
            Ok(event) => event,
            // A cut in the middle of an element is the cap, not a broken log.
            Err(_) if reader.get_ref().cut => break,
            Err(e) => {
                return Err(ErrorLogError::Malformed {
                    position: reader.error_position(),
                    reason: e.to_string(),
                })
            }
        };
        match event {
            Event::Start(e) => start(&e, &mut cursor, &mut summary, limits)?,
            Event::Empty(e) => {
                start(&e, &mut cursor, &mut summary, limits)?;
                end(&mut cursor, &mut summary, limits);
            }
            Event::End(_) => end(&mut cursor, &mut summary, limits),
            Event::Text(t) => push_text(&mut cursor.text, &t.xml10_content(), limits),
            Event::CData(t) => push_text(&mut cursor.text, &t.into_inner(), limits),
            Event::GeneralRef(r) => {
                // Character references and the five predefined entities only; anything
                // else is kept as written, never expanded.
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => predefined(&r.xml10_content())
                        .map_or_else(|| format!("&{};", r.xml10_content()), str::to_owned),
                };
                push_text(&mut cursor.text, &resolved, limits);
            }
            Event::DocType(_) => return Err(ErrorLogError::DocType),
            // A log that stops inside an element (a download cut off, a truncated file)
            // is broken, not short: its totals would silently miss the rest.
            Event::Eof if !cursor.path.is_empty() && !reader.get_ref().cut => {
                return Err(ErrorLogError::Malformed {
                    position: reader.buffer_position(),
                    reason: format!("the log ends inside <{}>", cursor.path.join("><")),
                })
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    summary.cut_short = reader.get_ref().cut;
    Ok(summary)
}

fn predefined(name: &str) -> Option<&'static str> {
    Some(match name {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "apos" => "'",
        "quot" => "\"",
        _ => return None,
    })
}

/// Appends `text`, keeping at most `max_text` characters.
fn push_text(into: &mut String, text: &str, limits: Limits) {
    let room = limits.max_text.saturating_sub(into.chars().count());
    into.extend(text.chars().filter(|c| !c.is_control()).take(room));
}

/// An attribute's value by local name, unescaped (entities never expanded beyond the
/// predefined ones), trimmed: the samples have stray spaces.
fn attribute(e: &BytesStart<'_>, name: &str) -> Option<String> {
    let mut attributes = e.attributes();
    attributes.with_checks(false);
    attributes
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .map(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_or_else(|_| a.value.to_string(), std::borrow::Cow::into_owned)
                .trim()
                .to_owned()
        })
}

fn start(
    e: &BytesStart<'_>,
    cursor: &mut Cursor,
    summary: &mut Summary,
    limits: Limits,
) -> Result<(), ErrorLogError> {
    let name = e.local_name().as_ref().to_owned();
    cursor.text.clear();
    if cursor.path.is_empty() && summary.format.is_none() {
        summary.format = Some(match name.as_str() {
            "DriveLog" => {
                summary.version = attribute(e, "Version");
                Format::DriveLog
            }
            "ErroredEntity" | "CopyLog" => Format::CopyLog,
            _ => return Err(ErrorLogError::NotALog(name)),
        });
    }
    let depth = cursor.path.len();
    match (summary.format, name.as_str()) {
        (Some(Format::DriveLog), "Blob" | "File") if depth == 1 => {
            let code = attribute(e, "Status").unwrap_or_default();
            let counts = !code.is_empty() && code != "Completed";
            cursor.entry = Some((
                Entry {
                    code,
                    ..Entry::default()
                },
                counts,
            ));
            cursor.entry_length = None;
        }
        (Some(Format::CopyLog), "ErroredEntity") if depth == 0 => {
            let mut entry = Entry::default();
            push_text(
                &mut entry.path,
                &attribute(e, "Path").unwrap_or_default(),
                limits,
            );
            cursor.entry = Some((entry, true));
        }
        (_, _) if depth >= 2 && cursor.entry.is_some() => {
            // A failing part inside a blob: a range, a block, its metadata, properties
            // or import disposition.
            if let (Some(status), Some((entry, _))) =
                (attribute(e, "Status"), cursor.entry.as_mut())
            {
                let fine = matches!(status.as_str(), "Completed" | "Committed" | "Created");
                if !fine && entry.part.is_none() {
                    entry.part = Some(format!("{name} {status}"));
                }
            }
        }
        _ => {}
    }
    // Summary categories: `<ValidationErrors>` / `<CopyErrors>` children named by the
    // category, with a Count.
    let in_summary = cursor
        .path
        .iter()
        .any(|p| p == "ValidationErrors" || p == "CopyErrors");
    if in_summary {
        if let Some(count) = attribute(e, "Count").and_then(|c| c.parse::<u64>().ok()) {
            if name != "None" {
                *summary.summary_counts.entry(name.clone()).or_default() += count;
            }
        }
    }
    cursor.path.push(name);
    Ok(())
}

fn end(cursor: &mut Cursor, summary: &mut Summary, limits: Limits) {
    let Some(name) = cursor.path.pop() else {
        return;
    };
    let text = std::mem::take(&mut cursor.text);
    let depth = cursor.path.len();
    let parent = cursor.path.last().map(String::as_str);
    if let Some((entry, _)) = cursor.entry.as_mut() {
        match name.as_str() {
            "BlobPath" | "FileStoragePath" if entry.path.is_empty() => entry.path = text,
            "FilePath" | "OriginalFilePath" => entry.file_path = Some(text),
            "Length" | "SizeInBytes" => cursor.entry_length = text.parse().ok(),
            "Category" => entry.code = text,
            "ErrorCode" => entry.error_code = Some(text),
            "ErrorMessage" => entry.message = Some(text),
            "Blob" | "File" | "ErroredEntity" => finish_entry(cursor, summary, limits),
            _ => {}
        }
        return;
    }
    let top = depth == 1 && matches!(parent, Some("DriveLog" | "CopyLog"));
    match name.as_str() {
        "DriveId" if top => summary.drive_id = Some(text),
        "Status" if top => summary.status = Some(text),
        "DriveLogVersion" if top => summary.version = Some(text),
        "TotalFiles" | "TotalFiles_Blobs" if top => summary.files_total = text.parse().ok(),
        "FilesErrored" if top => summary.files_errored = text.parse().ok(),
        _ => {}
    }
}

/// Counts the entry just closed and keeps it if there is room.
fn finish_entry(cursor: &mut Cursor, summary: &mut Summary, limits: Limits) {
    let Some((mut entry, counts)) = cursor.entry.take() else {
        return;
    };
    if !counts {
        return;
    }
    if entry.code.is_empty() {
        entry.code = "Unknown".into();
    }
    summary.bytes_failed = summary
        .bytes_failed
        .saturating_add(cursor.entry_length.take().unwrap_or(0));
    *summary.totals.entry(entry.code.clone()).or_default() += 1;
    if summary.entries.len() < limits.max_entries {
        summary.entries.push(entry);
    }
}

/// A reader that stops after `remaining` bytes and remembers that it did.
struct CountingRead<R> {
    inner: R,
    remaining: u64,
    cut: bool,
}

impl<R: BufRead> std::io::Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CountingRead<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.remaining == 0 {
            if !self.cut && !self.inner.fill_buf()?.is_empty() {
                self.cut = true;
            }
            return Ok(&[]);
        }
        let available = self.inner.fill_buf()?;
        let n = available
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        Ok(&available[..n])
    }

    fn consume(&mut self, amount: usize) {
        self.remaining = self.remaining.saturating_sub(amount as u64);
        self.inner.consume(amount);
    }
}
