//! Unit tests of `store`.

use super::*;

#[test]
fn details_drop_null_members_but_not_inside_arrays() {
    let patch = serde_json::json!({
        "details": {"url": null, "carrier": "FedEx", "drives": [{"copy_status": null}]},
        "gone": null
    });
    assert_eq!(
        merge_patch(patch),
        serde_json::json!({"details": {"carrier": "FedEx", "drives": [{"copy_status": null}]}})
    );
}

#[test]
fn timestamps_are_sqlite_text_and_round_trip() {
    let at = crate::moment::Moment::EPOCH.saturating_add(Duration::from_millis(1_795_000_000_123));
    let text = at.sql_text();
    assert_eq!(text.len(), "YYYY-MM-DD HH:MM:SS.SSS".len(), "{text}");
    assert_eq!(&text[10..11], " ");
    assert_eq!(Moment::parse(&text), Some(at));
}
