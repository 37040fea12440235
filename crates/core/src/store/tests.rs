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

/// A drive the document lists twice is written once, as its last listing: one upsert
/// statement may not touch a row twice on PostgreSQL.
#[test]
fn a_drive_listed_twice_is_written_once_as_listed_last() {
    use crate::model::{DriveSnapshot, JobSnapshot};
    let mut job = JobSnapshot::assemble(None, "Transferring".into(), None, None);
    let drive = |id: &str, percent| {
        DriveSnapshot::new(id.into(), Some("Transferring".into()), None, Some(percent))
    };
    job.drives = vec![drive("A", 10), drive("B", 20), drive("A", 30)];
    assert_eq!(
        rows::drives_json(&job),
        r#"[["B","Transferring",null,20,1],["A","Transferring",null,30,2]]"#
    );
}
