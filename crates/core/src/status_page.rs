//! The status page, served read-only by the `[http]` listener: `/` lists every job (the
//! ones that need a person first) and `/jobs/{account}/{name}` shows one job's timeline,
//! each drive's copy curve (server-rendered SVG), the time it spent in each state and
//! the deliveries of its alerts. Plain HTML and a few lines of CSS from the binary: no
//! script, no external asset, readable on a phone (390 px) and with a screen reader,
//! light or dark (WCAG 2.1 AA, checked by axe-core in tests/accessibility.rs). It
//! reloads itself only when asked (`?refresh=60`): a page that reloads on its own
//! takes a screen reader's place away. Every string that came from the service or the
//! database is escaped: service strings are hostile input.

use std::fmt::Write as _;

use crate::{
    events::{EventRecord, EventType},
    moment::Moment,
    report,
    store::{DeliveryRow, JobStatus, TimelinePage},
};

/// The bounds of `?refresh=N` (seconds).
const REFRESH_SECONDS: std::ops::RangeInclusive<u32> = 10..=3600;

/// A green square: the tab's icon, inline so that no request 404s for `/favicon.ico`.
const FAVICON: &str = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Crect width='16' height='16' rx='3' fill='%232e7d32'/%3E%3C/svg%3E";
/// The chart's drawing area (SVG user units).
const CHART_WIDTH: f64 = 640.0;
const CHART_HEIGHT: f64 = 200.0;
/// Drive curve colours, in order.
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];

// Colours meet WCAG AA (4.5:1) on the light and the dark canvas alike: light-dark()
// picks by the colour scheme the reader's browser uses.
const STYLE: &str = "\
:root{color-scheme:light dark;--err:light-dark(#b71c1c,#ff8a80);--warn:light-dark(#8a4b00,#ffb74d);--ok:light-dark(#2e7d32,#81c784);--line:#8884}
html{background:Canvas;color:CanvasText}
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:12px}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
a{color:inherit}table{border-collapse:collapse;width:100%}
td,th{padding:4px 6px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top;overflow-wrap:break-word}
progress{accent-color:var(--ok);width:7em;max-width:40vw;vertical-align:middle;margin-right:.3em}
.error{color:var(--err)}.warning{color:var(--warn)}.muted{opacity:.7}.log,caption{overflow-wrap:anywhere;text-align:left}
tr.attention td:first-child{border-left:4px solid var(--err)}
.badge{font-size:.85em;padding:0 .4em;border:1px solid currentColor;border-radius:3px}
svg{max-width:100%;height:auto}.legend span{margin-right:1em;white-space:nowrap}
@media (max-width:640px){.wide,progress{display:none}td,th{padding:3px;overflow-wrap:anywhere}body{padding:6px}}";

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Encodes one path segment (an account or job name) for a link.
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte));
            }
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

/// Decodes one percent-encoded path segment; `None` if it is not valid UTF-8 or a `%`
/// is not followed by two hex digits.
pub fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Why a job needs a person now, if it does; the most urgent reason.
pub fn needs_person(job: &JobStatus, now: Moment) -> Option<String> {
    if job.consecutive_failures > 0 {
        return Some(format!("polls failing ({})", job.consecutive_failures));
    }
    if let Some(action) = &job.notices.action {
        return Some(format!(
            "action required: {} {}",
            action.stage, action.status
        ));
    }
    if job.stalled {
        return Some("stalled".into());
    }
    if let Some(deadline) = &job.deadline {
        return Some(format!(
            "{} {}",
            deadline.kind,
            report::relative(deadline.at, now)
        ));
    }
    (job.condition.as_deref() == Some("completed_with_errors"))
        .then(|| "completed with errors".into())
}

/// How many events a job page shows at a time, newest first.
pub const PAGE_EVENTS: u32 = 200;

/// What a page's query string asks for; anything else in it is ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageQuery {
    /// `?refresh=N`: reload every N seconds, within [`REFRESH_SECONDS`].
    pub refresh: Option<u32>,
    /// `?before=ID`: the timeline's events older than event ID.
    pub before: Option<i64>,
}

impl PageQuery {
    /// Reads `refresh` and `before` from a query string.
    pub fn parse(query: Option<&str>) -> PageQuery {
        let value = |key: &str| {
            query?
                .split('&')
                .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
        };
        PageQuery {
            refresh: value("refresh")
                .and_then(|v| v.parse::<u32>().ok())
                .map(|s| s.clamp(*REFRESH_SECONDS.start(), *REFRESH_SECONDS.end())),
            before: value("before").and_then(|v| v.parse().ok()),
        }
    }
}

/// A whole page: `nav` (links away) before the main content, and a footer that says
/// when the page was made and how to have it reload itself.
fn page(title: &str, nav: &str, main: &str, now: Moment, refresh: Option<u32>) -> String {
    let reload = refresh.map_or_else(String::new, |s| {
        format!("<meta http-equiv=\"refresh\" content=\"{s}\">")
    });
    let made = now.rfc3339_seconds();
    let made = made.get(11..16).unwrap_or_default();
    let footer = match refresh {
        Some(s) => format!("As of {made} UTC; reloads every {s} s (<a href=\"?\">stop</a>)."),
        None => format!("As of {made} UTC. <a href=\"?refresh=60\">Reload every minute</a>."),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{reload}\
<link rel=\"icon\" href=\"{FAVICON}\"><title>{}</title><style>{STYLE}</style></head>\
<body>{nav}<main>{main}</main><footer><p class=\"muted\">{footer}</p></footer></body></html>\n",
        escape(title)
    )
}

/// A percentage as a native progress bar (hidden on a phone) and its figure.
fn bar(percent: Option<i64>) -> String {
    match percent {
        None => "<span class=\"muted\">-</span>".into(),
        Some(p) => {
            let p = p.clamp(0, 100);
            format!("<progress max=\"100\" value=\"{p}\" aria-hidden=\"true\"></progress>{p}%")
        }
    }
}

fn job_link(job: &JobStatus) -> String {
    format!(
        "<a href=\"/jobs/{}/{}\">{}/{}</a>",
        encode_segment(&job.account),
        encode_segment(&job.name),
        escape(&job.account),
        escape(&job.name)
    )
}

fn eta(eta: Option<Moment>) -> String {
    eta.map_or_else(String::new, |at| escape(&report::short_time(at)))
}

/// `GET /`: every job, the ones that need a person first; on PostgreSQL also whether
/// this instance leads or stands by (`role`).
pub fn index(jobs: &[JobStatus], now: Moment, role: Option<&str>, refresh: Option<u32>) -> String {
    let mut rows: Vec<(Option<String>, &JobStatus)> =
        jobs.iter().map(|j| (needs_person(j, now), j)).collect();
    // Attention first, then by account and name (the store's order).
    rows.sort_by_key(|(attention, _)| attention.is_none());
    let waiting = rows.iter().filter(|(a, _)| a.is_some()).count();
    let mut body = format!(
        "<h1>iewatch</h1><p>{} job(s), <strong>{waiting}</strong> need someone. \
<span class=\"muted\"><a href=\"/api/v1/jobs\">JSON</a>.</span></p>\
<table><thead><tr><th>Job</th><th>State</th><th>Progress</th><th class=\"wide\">Drives</th>\
<th class=\"wide\">Last change</th><th>ETA</th><th>Needs</th></tr></thead><tbody>",
        jobs.len()
    );
    for (attention, job) in rows {
        let _ = write!(
            body,
            "<tr class=\"job{}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"wide\">{}</td>\
<td class=\"wide\">{}</td><td>{}</td><td class=\"error\">{}</td></tr>",
            if attention.is_some() {
                " attention"
            } else {
                ""
            },
            job_link(job),
            escape(job.state.as_deref().unwrap_or("not yet polled")),
            bar(job.percent_complete),
            escape(&report::drives_summary(job)),
            escape(&report::ago(job.last_changed_at, now)),
            eta(job.eta),
            attention.as_deref().map(escape).unwrap_or_default(),
        );
    }
    body.push_str("</tbody></table>");
    if let Some(role) = role {
        let _ = write!(
            body,
            "<p class=\"muted\">This instance: {}</p>",
            escape(role)
        );
    }
    page("iewatch", "", &body, now, refresh)
}

/// What a job's page shows besides the job: one page of its timeline, the events its
/// charts are drawn from (state changes and drive progress, all of them), and the
/// deliveries of its alerts.
#[derive(Debug)]
pub struct JobPage<'a> {
    /// The timeline's page.
    pub timeline: &'a TimelinePage,
    /// Every state change and drive progress event, oldest first.
    pub chart: &'a [EventRecord],
    /// The newest deliveries.
    pub deliveries: &'a [DeliveryRow],
}

/// `GET /jobs/{account}/{name}`: one job's drives, copy curves, time per state, a page
/// of its timeline (newest first, a link to older ones) and its deliveries.
// Long: the page top to bottom, in the order it reads; each part is a call of its own.
pub fn job(job: &JobStatus, shown: &JobPage<'_>, now: Moment, refresh: Option<u32>) -> String {
    let (events, deliveries) = (&shown.timeline.events, shown.deliveries);
    let title = format!("{}/{}", job.account, job.name);
    let mut body = format!(
        "<h1>{}</h1><p>{} {} {}{}</p>",
        escape(&title),
        escape(job.state.as_deref().unwrap_or("not yet polled")),
        job.job_type.as_deref().map(escape).unwrap_or_default(),
        bar(job.percent_complete),
        job.eta
            .map(|at| format!(" &middot; ETA {}", eta(Some(at))))
            .unwrap_or_default(),
    );
    if let Some(attention) = needs_person(job, now) {
        let _ = write!(
            body,
            "<p class=\"error\"><span class=\"badge\">needs someone</span> {}</p>",
            escape(&attention)
        );
    }

    body.push_str("<h2>Drives</h2><table><thead><tr><th>Drive</th><th>State</th><th>Copy</th><th>Progress</th><th>ETA</th></tr></thead><tbody>");
    for drive in &job.drives {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&drive.drive_id),
            escape(drive.state.as_deref().unwrap_or("")),
            escape(drive.copy_status.as_deref().unwrap_or("")),
            bar(drive.percent_complete),
            eta(drive.eta),
        );
    }
    body.push_str("</tbody></table>");
    body.push_str(&what_failed(job));
    body.push_str("<h2>Copy progress</h2>");
    body.push_str(&progress_chart(job, shown.chart, now));

    body.push_str("<h2>Time in each state</h2>");
    body.push_str(&time_in_states(shown.chart, now));

    let older = shown.timeline.older.map_or_else(String::new, |id| {
        format!(" <a href=\"?before={id}\">Older events</a>.")
    });
    let _ = write!(
        body,
        "<h2>Timeline</h2><p class=\"muted\">{} event(s) shown, newest first; \
<a href=\"/api/v1/jobs/{}/{}/events\">all as JSON</a>.{older}</p>\
<table><thead><tr><th>When</th><th>Event</th><th>What</th></tr></thead><tbody>",
        events.len(),
        encode_segment(&job.account),
        encode_segment(&job.name)
    );
    for event in events.iter().rev() {
        let drive = event
            .drive_id
            .as_ref()
            .map(|d| format!("{} ", escape(d.as_str())))
            .unwrap_or_default();
        let _ = write!(
            body,
            "<tr class=\"event {}\"><td>{}</td><td>{}</td><td>{drive}{}</td></tr>",
            event.severity.as_str(),
            escape(&report::short_time(event.observed_at)),
            escape(event.event_type.as_str()),
            escape(&event.describe()),
        );
    }
    body.push_str("</tbody></table><h2>Deliveries of its alerts</h2>");
    if deliveries.is_empty() {
        body.push_str("<p class=\"muted\">none</p>");
    } else {
        body.push_str("<table><thead><tr><th>Channel</th><th>Event</th><th>Outcome</th><th class=\"wide\">Attempts</th><th class=\"wide\">Last answer</th></tr></thead><tbody>");
        for d in deliveries {
            let class = match d.status {
                "failed" => "error",
                "pending" => "warning",
                _ => "",
            };
            let answer = match (&d.last_status, &d.last_error) {
                (_, Some(error)) => error.clone(),
                (Some(status), None) => format!("HTTP {status}"),
                (None, None) => String::new(),
            };
            let _ = write!(
                body,
                "<tr class=\"delivery {class}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"wide\">{}</td><td class=\"wide\">{}</td></tr>",
                escape(&d.webhook),
                escape(d.event_type.as_str()),
                d.status,
                d.attempts,
                escape(&answer),
            );
        }
        body.push_str("</tbody></table>");
    }
    let nav = "<nav><a href=\"/\">&larr; all jobs</a></nav>";
    page(&title, nav, &body, now, refresh)
}

/// A table per drive whose error log was read: the failed files with what their code
/// means, or why the log could not be read.
fn what_failed(job: &JobStatus) -> String {
    if job.error_logs.is_empty() {
        return String::new();
    }
    let mut out = String::from("<h2>What failed</h2>");
    for log in &job.error_logs {
        let r = &log.report;
        let _ = write!(
            out,
            "<table><caption>Drive {}: {}</caption>",
            escape(&log.drive_id),
            escape(&r.headline())
        );
        out.push_str("<thead><tr><th>File on the drive</th><th class=\"wide\">In Azure</th><th>Code</th><th class=\"wide\">What it means</th></tr></thead><tbody>");
        for entry in &r.first {
            let meaning = match (&entry.meaning, &entry.detail) {
                (Some(m), Some(d)) => format!("{m} ({d})"),
                (Some(m), None) => m.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) => String::new(),
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"wide\">{}</td><td>{}</td><td class=\"wide\">{}</td></tr>",
                escape(entry.file_path.as_deref().unwrap_or("")),
                escape(&entry.path),
                escape(&entry.code),
                escape(&meaning),
            );
        }
        let _ = write!(
            out,
            "</tbody></table><p class=\"muted log\">Log: {} &middot; <code>iewatch errors {} --all</code> lists every entry.</p>",
            escape(&r.log),
            escape(&format!("{}/{}", job.account, job.name)),
        );
    }
    out
}

/// Seconds since the epoch, for a chart's x axis.
fn seconds(at: Moment) -> f64 {
    // Exact to the millisecond for any Moment (below 2^53).
    at.unix_millis() as f64 / 1000.0
}

/// One step curve per drive of the job (percent over time, from its recorded changes),
/// each an SVG path, over the time from the job's first event to now.
fn progress_chart(job: &JobStatus, events: &[EventRecord], now: Moment) -> String {
    if job.drives.is_empty() {
        return "<p class=\"muted\">no drives</p>".into();
    }
    let end = seconds(now);
    let start = events
        .first()
        .map(|e| seconds(e.observed_at))
        .unwrap_or(end)
        .min(end);
    let span = (end - start).max(1.0);
    let x = |t: f64| ((t - start) / span * CHART_WIDTH).clamp(0.0, CHART_WIDTH);
    let y = |p: f64| CHART_HEIGHT - p.clamp(0.0, 100.0) / 100.0 * CHART_HEIGHT;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"-40 -10 {} {}\" role=\"img\" aria-label=\"copy progress per drive\">",
        CHART_WIDTH + 50.0,
        CHART_HEIGHT + 30.0
    );
    for percent in [0.0, 50.0, 100.0] {
        let _ = write!(
            svg,
            "<line x1=\"0\" x2=\"{CHART_WIDTH}\" y1=\"{0}\" y2=\"{0}\" stroke=\"#8886\"/>\
<text x=\"-6\" y=\"{0}\" font-size=\"11\" text-anchor=\"end\" dominant-baseline=\"middle\" fill=\"currentColor\">{percent}%</text>",
            y(percent)
        );
    }
    let mut legend = String::from("<p class=\"legend\">");
    for (index, drive) in job.drives.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        // Recorded percentages of this drive, in order; the curve holds each value
        // until the next one and ends at now with the current one.
        let points: Vec<(f64, f64)> = events
            .iter()
            .filter(|e| {
                e.drive_id
                    .as_ref()
                    .is_some_and(|d| d.as_str() == drive.drive_id)
            })
            .filter(|e| e.event_type == EventType::DriveProgress)
            .filter_map(|e| {
                Some((
                    seconds(e.observed_at),
                    e.to.as_deref()?.parse::<f64>().ok()?,
                ))
            })
            .collect();
        let mut d = format!("M{:.1},{:.1}", x(start), y(0.0));
        for (t, p) in &points {
            let _ = write!(d, " H{:.1} V{:.1}", x(*t), y(*p));
        }
        let last = drive
            .percent_complete
            .map(|p| p as f64)
            .or(points.last().map(|(_, p)| *p))
            .unwrap_or(0.0);
        let _ = write!(d, " V{:.1} H{:.1}", y(last), x(end));
        let _ = write!(
            svg,
            "<path class=\"drive\" data-drive=\"{}\" d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            escape(&drive.drive_id)
        );
        let _ = write!(
            legend,
            "<span style=\"color:{colour}\">&#9632;</span> <span>{}</span>",
            escape(&drive.drive_id)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{0}\" font-size=\"11\" fill=\"currentColor\">{1}</text>\
<text x=\"{CHART_WIDTH}\" y=\"{0}\" font-size=\"11\" text-anchor=\"end\" fill=\"currentColor\">now</text></svg>",
        CHART_HEIGHT + 16.0,
        escape(&events.first().map(|e| report::short_time(e.observed_at)).unwrap_or_default()),
    );
    legend.push_str("</p>");
    svg + &legend
}

/// How long the job was in each state, from its recorded state changes (the current
/// state until now), as a table in the order the states came.
fn time_in_states(events: &[EventRecord], now: Moment) -> String {
    let end = seconds(now);
    let changes: Vec<(f64, &str)> = events
        .iter()
        .filter(|e| {
            matches!(
                e.event_type,
                EventType::JobFirstSeen | EventType::JobStateChanged
            )
        })
        .filter_map(|e| Some((seconds(e.observed_at), e.to.as_deref()?)))
        .collect();
    if changes.is_empty() {
        return "<p class=\"muted\">no state seen yet</p>".into();
    }
    // In the order the states came; one lookup per change, whatever their number.
    let mut totals: Vec<(&str, f64)> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, (since, state)) in changes.iter().enumerate() {
        let until = changes.get(i + 1).map_or(end, |(t, _)| *t);
        let spent = (until - since).max(0.0);
        let at = *index.entry(state).or_insert_with(|| {
            totals.push((state, 0.0));
            totals.len() - 1
        });
        totals[at].1 += spent;
    }
    let mut table = String::from(
        "<table class=\"states\"><thead><tr><th>State</th><th>Time</th></tr></thead><tbody>",
    );
    for (state, spent) in totals {
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(state),
            report::span(std::time::Duration::from_secs_f64(spent.max(0.0)))
        );
    }
    table.push_str("</tbody></table>");
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_control_characters_are_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\"\u{7}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;\u{FFFD}"
        );
    }

    #[test]
    fn path_segments_round_trip_and_bad_escapes_are_refused() {
        for name in [
            "MySampleJob",
            "job with spaces/and slash",
            "Überführung-2026",
            "a%b",
        ] {
            let encoded = encode_segment(name);
            assert!(
                !encoded.contains('/') && !encoded.contains(' '),
                "{encoded}"
            );
            assert_eq!(decode_segment(&encoded).as_deref(), Some(name));
        }
        assert_eq!(decode_segment("%zz"), None);
        assert_eq!(decode_segment("%4"), None);
        assert_eq!(decode_segment("%ff"), None, "not UTF-8");
    }
}
