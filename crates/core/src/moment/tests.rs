use super::*;

#[test]
fn the_extremes_are_clamped_or_refused_never_panicked_on() {
    let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1800);
    assert_eq!(Moment::from_system(before), Moment::EPOCH);
    assert_eq!(
        Moment::from_unix_secs(i64::MAX).rfc3339_seconds(),
        "9999-12-30T00:00:00Z"
    );
    assert_eq!(Moment::from_unix_secs(-5), Moment::EPOCH);
    assert_eq!(Moment::LATEST.saturating_add(Duration::MAX), Moment::LATEST);
    assert_eq!(Moment::EPOCH.saturating_sub(Duration::MAX), Moment::EPOCH);
    assert_eq!(Moment::LATEST.rfc3339_millis(), "9999-12-30T00:00:00.000Z");
    assert_eq!(Moment::EPOCH.sql_text(), "1970-01-01 00:00:00.000");
    assert_eq!(Moment::EPOCH.since(Moment::LATEST), Duration::ZERO);
    assert_eq!(Moment::EPOCH.checked_since(Moment::LATEST), None);
    for refused in [
        "10000-01-01 00:00:00.000",
        "0001-01-01 00:00:00.000",
        "1969-12-31 23:59:59.999",
        "not a time",
        "",
    ] {
        assert_eq!(Moment::parse(refused), None, "{refused}");
    }
}

#[test]
fn every_text_form_reads_back_as_one_instant() {
    let at = Moment::from_unix_secs(1_780_000_000).saturating_add(Duration::from_millis(250));
    for text in [
        at.sql_text(),
        at.rfc3339_millis(),
        "2026-05-28T20:26:40.25+00:00".into(),
        "2026-05-28T22:26:40.250+02:00".into(),
        "2026-05-28T20:26:40.250".into(),
    ] {
        assert_eq!(Moment::parse(&text), Some(at), "{text}");
    }
    assert_eq!(at.rfc3339_seconds(), "2026-05-28T20:26:40Z");
    assert_eq!(at.unix_millis(), 1_780_000_000_250);
}

#[test]
fn json_is_text_by_default_seconds_where_a_field_says_and_refuses_the_rest() {
    let read = |json: &str| serde_json::from_str::<Moment>(json).ok();
    let at = Moment::from_unix_secs(1_780_000_000);
    let text = serde_json::to_string(&at).unwrap_or_default();
    assert_eq!(text, "\"2026-05-28T20:26:40Z\"");
    assert_eq!(read(&text), Some(at));
    assert_eq!(read("1780000000"), Some(at));
    assert_eq!(read("18446744073709551615"), Some(Moment::LATEST));
    for refused in ["-1", "1.5", "\"not a time\"", "true", "{}"] {
        assert_eq!(read(refused), None, "{refused}");
    }
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Stored {
        #[serde(with = "unix_secs")]
        at: Moment,
        #[serde(with = "unix_secs_mark")]
        mark: Option<(i64, Moment)>,
    }
    let stored = Stored {
        at,
        mark: Some((40, at)),
    };
    let json = serde_json::to_string(&stored).unwrap_or_default();
    assert_eq!(json, r#"{"at":1780000000,"mark":[40,1780000000]}"#);
    assert_eq!(serde_json::from_str::<Stored>(&json).ok(), Some(stored));
}
