//! The Resource Manager side as tests drive it: stepping the import lifecycle by the
//! events it brings (ARM has no ETag to wait on).

use std::{path::Path, time::Duration};

use iewatch::{detect::detect_changes, model::JobSnapshot};

use super::{event_list, scenario, wait_for};

/// Steps through the versions in `range`, waiting after each until the events it brings
/// are recorded (ARM has no ETag to wait on).
pub async fn play_by_events(
    sim: &iewatch::simulator::RunningSimulator,
    db: &Path,
    range: std::ops::Range<usize>,
    before_each: impl Fn(usize),
) {
    let timeline = scenario("import-lifecycle.toml")
        .compile()
        .unwrap()
        .remove(0);
    let snapshots: Vec<JobSnapshot> = timeline
        .versions
        .iter()
        .map(|v| v.job.clone().unwrap().into_snapshot())
        .collect();
    for i in range {
        before_each(i);
        sim.set_time(Some(timeline.versions[i].since));
        // The changes, and the one notice of the purge clock once the job completed.
        let completed = snapshots[..=i]
            .iter()
            .any(|s| s.state.as_str() == "Completed");
        // And one report once a drive has ended with errors (read or not, never silent).
        let reported = snapshots[..=i]
            .iter()
            .any(|s| !s.notices.error_logs.is_empty());
        let expected: usize = (0..=i)
            .map(|k| detect_changes(k.checked_sub(1).map(|p| &snapshots[p]), &snapshots[k]).len())
            .sum::<usize>()
            + usize::from(completed)
            + usize::from(reported);
        let reached = wait_for(Duration::from_secs(20), || async {
            event_list(db, "MySampleJob").await.len() == expected
        })
        .await;
        assert!(
            reached,
            "version {i}: expected {expected} events, have {}",
            event_list(db, "MySampleJob").await.len()
        );
    }
}
