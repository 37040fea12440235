//! What people read: `status`, `history` and `deliveries` as aligned text or JSON.

use crate::{
    model::Severity,
    moment::Moment,
    store::{DeliveryRow, EventRecord, JobStatus},
};

/// "just now", "42 s ago", "3 min ago", "5 h ago", "2 d ago", or "-".
pub fn ago(at: Option<Moment>, now: Moment) -> String {
    let Some(at) = at else {
        return "-".into();
    };
    let secs = now.since(at).as_secs();
    match secs {
        0..=4 => "just now".into(),
        5..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// "in 3 d", "in 5 h", ... for a future time, as [`ago`] for a past one.
pub fn relative(at: Moment, now: Moment) -> String {
    match at.checked_since(now) {
        Some(ahead) if ahead.as_secs() >= 5 => format!("in {}", span(ahead)),
        _ => ago(Some(at), now),
    }
}

/// A time as `2026-11-25 20:13` (UTC).
pub fn short_time(at: Moment) -> String {
    let mut text = at.sql_text();
    text.truncate(16);
    text
}

/// A duration in its two largest units: "3 d 4 h", "5 h 2 min", "42 min", "12 s".
pub fn span(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// `2 drives: 1 Transferring 40%, 1 Completed`.
pub fn drives_summary(job: &JobStatus) -> String {
    if job.drives.is_empty() {
        return "no drives".into();
    }
    let mut groups: Vec<(String, usize)> = Vec::new();
    for drive in &job.drives {
        // Data Box units have no drive state: their copy status stands in for it.
        let mut label = match (&drive.state, &drive.copy_status) {
            (Some(state), _) => state.clone(),
            (None, Some(status)) => status.clone(),
            (None, None) => match drive.percent_complete {
                None => "waiting".into(),
                Some(100) => "copied".into(),
                Some(_) => "copying".into(),
            },
        };
        if let Some(status) = drive
            .copy_status
            .as_deref()
            .filter(|s| !matches!(*s, "InProgress" | "Completed" | "None"))
            .filter(|_| drive.state.is_some())
        {
            label.push_str(&format!(" ({status})"));
        }
        let copying = match &drive.state {
            Some(state) => state == "Transferring",
            None => matches!(
                (drive.copy_status.as_deref(), drive.percent_complete),
                (Some("InProgress"), _) | (None, Some(0..=99))
            ),
        };
        if copying {
            if let Some(p) = drive.percent_complete {
                label.push_str(&format!(" {p}%"));
            }
        }
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => groups.push((label, 1)),
        }
    }
    let parts: Vec<String> = groups
        .into_iter()
        .map(|(label, n)| format!("{n} {label}"))
        .collect();
    // A Data Box appliance reports its progress per destination account.
    let accounts = matches!(job.sku.as_deref(), Some("DataBox" | "DataBoxHeavy"));
    let noun = match (accounts, job.drives.len() == 1) {
        (false, true) => "drive",
        (false, false) => "drives",
        (true, true) => "account",
        (true, false) => "accounts",
    };
    format!("{} {noun}: {}", job.drives.len(), parts.join(", "))
}

/// Service data is outside input: a control character in it (an escape sequence in a
/// state, say) is shown escaped, never sent raw to a terminal.
fn printable(cell: &str) -> String {
    if !cell.chars().any(char::is_control) {
        return cell.to_owned();
    }
    cell.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn table(rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| row.iter().map(|cell| printable(cell)).collect())
        .collect();
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One aligned line per job, with a header.
pub fn status_text(jobs: &[JobStatus], now: Moment) -> String {
    if jobs.is_empty() {
        return "no jobs recorded yet\n".into();
    }
    let mut rows = vec![[
        "JOB",
        "TYPE",
        "STATE",
        "%",
        "DRIVES",
        "LAST CHANGE",
        "LAST POLL",
        "LAST ERROR",
    ]
    .map(String::from)
    .to_vec()];
    for job in jobs {
        rows.push(vec![
            format!("{}/{}", job.account, job.name),
            match (&job.job_type, &job.sku) {
                (kind, Some(sku)) => format!("{} {sku}", kind.as_deref().unwrap_or("-")),
                (kind, None) => kind.clone().unwrap_or_else(|| "-".into()),
            },
            state_cell(job, now),
            match (job.percent_complete, &job.eta) {
                (None, _) => "-".into(),
                (Some(p), None) => format!("{p}%"),
                (Some(p), Some(eta)) => {
                    let eta = eta.rfc3339_seconds();
                    format!("{p}% (ETA {})", eta.trim_end_matches(":00Z"))
                }
            },
            drives_summary(job),
            ago(job.last_changed_at, now),
            ago(job.last_polled_at, now),
            job.last_error.clone().map_or("-".into(), |e| {
                let e: String = e.chars().take(80).collect();
                if job.consecutive_failures > 1 {
                    format!("{e} (x{})", job.consecutive_failures)
                } else {
                    e
                }
            }),
        ]);
    }
    let mut text = table(rows);
    for job in jobs {
        for log in &job.error_logs {
            text.push_str(&format!(
                "errors: {}/{} drive {}: {}\n",
                job.account,
                job.name,
                crate::telemetry::printable(&log.drive_id),
                crate::telemetry::printable(&log.report.headline())
            ));
        }
        for damage in &job.damaged {
            text.push_str(&format!(
                "warning: {}/{}: {}; shown as empty until the daemon's next write repairs it\n",
                job.account,
                job.name,
                crate::telemetry::printable(damage)
            ));
        }
    }
    text
}

/// The state, and what in it needs a person: an action the service waits for, a delay.
fn state_cell(job: &JobStatus, now: Moment) -> String {
    let mut cell = job.state.clone().unwrap_or_else(|| "(not seen yet)".into());
    if job.notices.action.is_some() {
        cell.push_str(" (action required)");
    }
    if job.notices.delays.iter().any(|d| d.is_active()) {
        cell.push_str(" (delayed)");
    }
    if job.stalled {
        cell.push_str(" (stalled)");
    }
    if job.muted_until.is_some_and(|until| until > now) {
        cell.push_str(" (muted)");
    }
    cell
}

/// One line per event, oldest first.
pub fn history_text(entries: &[EventRecord]) -> String {
    if entries.is_empty() {
        return "no events in that period\n".into();
    }
    let rows = entries
        .iter()
        .map(|e| {
            vec![
                e.observed_at.sql_text(),
                format!("{}/{}", e.account, e.job),
                e.drive_id
                    .as_ref()
                    .map_or("job".into(), |d| format!("drive {d}")),
                e.describe(),
                if e.severity == Severity::Info {
                    String::new()
                } else {
                    format!("[{}]", e.severity)
                },
            ]
        })
        .collect();
    table(rows)
}

/// One line per delivery, newest first.
pub fn deliveries_text(rows: &[DeliveryRow]) -> String {
    if rows.is_empty() {
        return "no deliveries\n".into();
    }
    let mut table_rows = vec![[
        "ID",
        "WEBHOOK",
        "JOB",
        "EVENT",
        "STATUS",
        "ATTEMPTS",
        "WHEN",
        "LAST ERROR",
    ]
    .map(String::from)
    .to_vec()];
    for d in rows {
        table_rows.push(vec![
            d.id.to_string(),
            d.webhook.clone(),
            d.job.clone(),
            format!("{} #{}", d.event_type, d.event_id),
            d.status.to_owned(),
            d.attempts.to_string(),
            d.finished_at
                .map(Moment::sql_text)
                .or_else(|| d.next_attempt_at.map(|n| format!("next {}", n.sql_text())))
                .unwrap_or_default(),
            d.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table(table_rows)
}
