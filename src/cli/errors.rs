//! `iewatch errors --file LOG`: what failed, from an error log an operator downloaded (a
//! drive's `ErrorLogUri`, a Data Box copy log): the totals by code with what each code
//! means, and the failed files, as text or JSON.

use std::{path::Path, process::ExitCode};

use crate::errorlog::{self, meaning, Limits, Summary};

/// Most entries `--all` lists: a bound, far above any real log's.
const ALL_ENTRIES: usize = 1_000_000;

/// Reads `path` and prints its summary.
pub(super) fn errors(path: &Path, json: bool, all: bool) -> anyhow::Result<ExitCode> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => {
            errln!("cannot open {}: {e}", path.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let limits = Limits {
        max_entries: if all {
            ALL_ENTRIES
        } else {
            Limits::default().max_entries
        },
        ..Limits::default()
    };
    let summary = match errorlog::summarise(std::io::BufReader::new(file), limits) {
        Ok(summary) => summary,
        Err(e) => {
            errln!("{}: {e}", path.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&as_json(&summary))?);
    } else {
        print_text(&summary);
    }
    Ok(ExitCode::SUCCESS)
}

/// `code — meaning`, or the code alone when its meaning is not documented.
fn explained(code: &str) -> String {
    match meaning(code) {
        Some(m) => format!("{code} — {m}"),
        None => code.to_owned(),
    }
}

fn print_text(s: &Summary) {
    let kind = match s.format {
        Some(errorlog::Format::DriveLog) => "drive log",
        Some(errorlog::Format::CopyLog) => "copy log",
        None => "an empty log",
    };
    let what = match &s.version {
        Some(version) => format!("{kind} {version}"),
        None => kind.to_owned(),
    };
    let drive = s.drive_id.as_deref().unwrap_or("?");
    outln!("drive {drive} ({what})");
    if let Some(status) = &s.status {
        outln!("status: {}", explained(status));
    }
    if let (Some(total), Some(errored)) = (s.files_total, s.files_errored) {
        outln!("files: {errored} of {total} failed");
    }
    let failed = s.entries_total();
    let bytes = if s.bytes_failed > 0 {
        format!(" ({} bytes)", s.bytes_failed)
    } else {
        String::new()
    };
    outln!("{failed} entries failed{bytes}:");
    for (code, count) in &s.totals {
        outln!("  {count} {}", explained(code));
    }
    for (category, count) in &s.summary_counts {
        outln!("  the log's summary: {count} {}", explained(category));
    }
    if !s.entries.is_empty() {
        outln!(
            "{}:",
            if (s.entries.len() as u64) < failed {
                format!("first {}", s.entries.len())
            } else {
                "each".to_owned()
            }
        );
    }
    for e in &s.entries {
        let mut line = format!("  {}", e.path);
        if let Some(file) = &e.file_path {
            line.push_str(&format!(" (from {file})"));
        }
        line.push_str(&format!(": {}", e.code));
        if let Some(code) = &e.error_code {
            line.push_str(&format!(" {code}"));
        }
        if let Some(message) = &e.message {
            line.push_str(&format!(": {message}"));
        }
        if let Some(part) = &e.part {
            line.push_str(&format!("; {part}"));
        }
        outln!("{line}");
    }
    if s.cut_short {
        outln!("the log is longer than iewatch reads (256 MiB): the counts cover what was read");
    }
}

fn as_json(s: &Summary) -> serde_json::Value {
    let totals: Vec<_> = s
        .totals
        .iter()
        .map(|(code, count)| serde_json::json!({"code": code, "count": count, "meaning": meaning(code)}))
        .collect();
    let entries: Vec<_> = s
        .entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "path": e.path, "file_path": e.file_path, "code": e.code,
                "meaning": meaning(&e.code), "error_code": e.error_code,
                "message": e.message, "part": e.part,
            })
        })
        .collect();
    serde_json::json!({
        "format": s.format.map(|f| match f {
            errorlog::Format::DriveLog => "DriveLog",
            errorlog::Format::CopyLog => "CopyLog",
        }),
        "version": s.version,
        "drive_id": s.drive_id,
        "status": s.status,
        "status_meaning": s.status.as_deref().and_then(meaning),
        "failed": s.entries_total(),
        "totals": totals,
        "summary_counts": s.summary_counts,
        "files_total": s.files_total,
        "files_errored": s.files_errored,
        "bytes_failed": s.bytes_failed,
        "entries": entries,
        "cut_short": s.cut_short,
    })
}

/// `iewatch errors JOB`: the reports recorded for the job's drives; with `--all`, each
/// log read again from the storage account and every failed entry listed.
pub(super) async fn job_errors(
    job: &str,
    db: &super::flags::DatabaseArgs,
    json: bool,
    all: bool,
) -> anyhow::Result<ExitCode> {
    let store = super::database::open(db).await?;
    if !store.has_job(job).await? {
        errln!("no job named {job:?} in {}", store.database());
        return Ok(ExitCode::FAILURE);
    }
    let logs = store.error_logs(job).await?;
    if logs.is_empty() {
        outln!("{job}: no error log recorded (no drive has ended with errors, or its log is still being read)");
        return Ok(ExitCode::SUCCESS);
    }
    if !all {
        if json {
            outln!("{}", serde_json::to_string_pretty(&logs)?);
        } else {
            for log in &logs {
                print_report(log);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    reread_all(&logs, db, json).await
}

fn print_report(log: &crate::store::StoredErrorLog) {
    let r = &log.report;
    outln!(
        "{}/{} drive {}: {}",
        log.account,
        log.job,
        log.drive_id,
        r.headline()
    );
    outln!("  log: {} (read {} UTC)", r.log, log.read_at);
    if let Some(status) = &r.status {
        outln!("  status: {}", explained(status));
    }
    for total in &r.totals {
        outln!("  {} × {}", total.count, explained(&total.code));
    }
    if !r.first.is_empty() {
        let shown = r.first.len() as u64;
        outln!(
            "  {}:",
            if shown < r.failed {
                format!("first {shown} of {} (--all lists every one)", r.failed)
            } else {
                "failed".to_owned()
            }
        );
    }
    for entry in &r.first {
        let detail = entry
            .detail
            .as_deref()
            .map_or_else(String::new, |d| format!(" ({d})"));
        match &entry.file_path {
            Some(file) => outln!("    {file} → {}: {}{detail}", entry.path, entry.code),
            None => outln!("    {}: {}{detail}", entry.path, entry.code),
        }
    }
}

/// Reads each recorded log again, with every entry kept.
async fn reread_all(
    logs: &[crate::store::StoredErrorLog],
    db: &super::flags::DatabaseArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let Ok(config) = super::service::load_config(&db.config.config, false) else {
        errln!("--all reads the logs again with the config's credentials: fix the config first");
        return Ok(ExitCode::FAILURE);
    };
    let caches = crate::identity::TokenCaches::new(crate::identity::Env::process());
    let limits = Limits {
        max_entries: ALL_ENTRIES,
        ..Limits::default()
    };
    let timeouts = (config.daemon.request_timeout, config.daemon.connect_timeout);
    let mut failed = false;
    let mut read = Vec::new();
    for log in logs {
        let Some(account) = config.account(&log.account) else {
            errln!(
                "{}: account {} is not in the config",
                log.report.log,
                log.account
            );
            failed = true;
            continue;
        };
        let reader = errorlog::AccountLogs::for_account(account, timeouts, &caches);
        let deadline = config.daemon.request_timeout.saturating_mul(10);
        match reader.read(&log.report.log, limits, deadline).await {
            Ok(summary) => read.push((log, summary)),
            Err(e) => {
                errln!("{}: {e}", log.report.log);
                failed = true;
            }
        }
    }
    if json {
        let all: Vec<_> = read
            .iter()
            .map(|(log, s)| serde_json::json!({"account": log.account, "job": log.job, "drive_id": log.drive_id, "log": log.report.log, "summary": as_json(s)}))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for (log, summary) in &read {
            outln!("{}/{} — {}", log.account, log.job, log.report.log);
            print_text(summary);
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
