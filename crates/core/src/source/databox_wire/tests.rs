//! Unit tests of the Data Box wire model.

use super::*;

#[test]
fn times_with_offsets_become_utc_and_sentinels_none() {
    let utc = |text: &str| Moment::from_service(text).map(Moment::rfc3339_seconds);
    assert_eq!(
        utc("2020-08-07T10:50:36.3341513+05:30").as_deref(),
        Some("2020-08-07T05:20:36Z")
    );
    assert_eq!(
        utc("2020-03-06T14:34:26.6154788+00:00").as_deref(),
        Some("2020-03-06T14:34:26Z")
    );
    assert_eq!(
        utc("2022-01-01T00:00:00-08:00").as_deref(),
        Some("2022-01-01T08:00:00Z")
    );
    assert_eq!(
        utc("2025-05-26T10:00:00Z").as_deref(),
        Some("2025-05-26T10:00:00Z")
    );
    for bad in [
        "0001-01-01T00:00:00+00:00",
        "0001-01-01T05:30:00+05:30",
        "1970-01-01T00:30:00+01:00",
        "9999-12-31T23:30:00-01:00",
        "2025-05-26T10:00:00",
        "yesterday",
        "2020-03-06T14:34:26+99:00",
        "",
    ] {
        assert_eq!(utc(bad), None, "{bad}");
    }
}

#[test]
fn percentages_never_overflow_and_stay_within_bounds() {
    assert_eq!(percent_of(1, 3), 33);
    assert_eq!(percent_of(i64::MAX, i64::MAX), 100);
    assert_eq!(percent_of(i64::MAX, 1), 100);
    assert_eq!(percent_of(5, 0), 0);
    let unit = |done, total| CopyProgress {
        bytes_processed: Some(done),
        total_bytes_to_process: Some(total),
        ..CopyProgress::default()
    };
    assert_eq!(
        job_percent(&[unit(i64::MAX, i64::MAX), unit(0, i64::MAX)]),
        Some(50)
    );
    assert_eq!(job_percent(&[unit(1, 4), unit(3, 4)]), Some(50));
    assert_eq!(job_percent(&[]), None);
}
