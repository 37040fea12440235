//! Unit tests of `telemetry`.

use super::*;

#[test]
fn metrics_follow_the_accept_header_and_the_text_format_names_counters_whole() {
    let telemetry = Telemetry::new();
    telemetry.event(EventType::JobProgress);
    let kind = |accept: Option<&str>| negotiate_metrics(&telemetry, accept).1;
    let openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    let plain = "text/plain; version=0.0.4; charset=utf-8";
    for (accept, expected) in [
        (None, plain),
        (Some("*/*"), plain),
        (Some("text/plain;version=0.0.4"), plain),
        (Some("application/openmetrics-text"), openmetrics),
        (
            Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.3"),
            openmetrics,
        ),
        (
            Some("application/openmetrics-text;q=0.2, text/plain;q=0.9"),
            plain,
        ),
        (Some("application/openmetrics-text;q=0"), plain),
        (Some("application/openmetrics-text;q=nonsense"), openmetrics),
    ] {
        assert_eq!(kind(accept), expected, "{accept:?}");
    }
    let text = telemetry.encode_prometheus();
    assert!(
        text.contains("# HELP iewatch_events_total Events recorded by type."),
        "{text}"
    );
    assert!(
        text.contains("# TYPE iewatch_events_total counter"),
        "{text}"
    );
    assert!(
        text.contains("iewatch_events_total{type=\"job.progress\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE iewatch_jobs_watched gauge"), "{text}");
    assert!(!text.contains("# EOF"));
    assert!(telemetry.encode().trim_end().ends_with("# EOF"));
}

#[test]
fn a_hostile_state_cannot_forge_a_series_or_end_the_exposition() {
    let telemetry = Telemetry::new();
    telemetry.set_jobs(1, 1);
    let hostile = "Transferring\"} 1\n# EOF\niewatch_jobs_failing 0\n{x=\"";
    telemetry.job_seen("prod", "Job\nname", None, hostile, Some(40));
    let text = telemetry.encode();
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let failing: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("iewatch_jobs_failing"))
        .collect();
    assert_eq!(failing, ["iewatch_jobs_failing 1"], "{text}");
    for line in text.lines().filter(|l| l.starts_with("iewatch_job_state")) {
        assert_eq!(line.matches('"').count(), 6, "three quoted labels: {line}");
    }
    assert_eq!(label_value(&"x".repeat(500)).len(), MAX_LABEL_CHARS);
}
