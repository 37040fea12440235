//! What a 200 must be before it is recorded: the answer for the job asked (a service or
//! a proxy that answers with another job's document must not make iewatch record that
//! job's history as this one's), and a document within bounds (a job has at most ten
//! drives; a document with thousands, or with fields of megabytes, is refused before any
//! work is spent on it).

use std::collections::HashSet;

use super::{Observation, SourceError};
use crate::model::JobName;

/// Most drives a document may list. The Import/Export service allows ten per job and
/// Data Box reports one unit per disk or destination account; 64 leaves room for both.
pub const MAX_DRIVES: usize = 64;
/// Longest watched value (state, copy status, drive id, job type) accepted.
pub const MAX_FIELD_CHARS: usize = 256;

/// How a document names its job: its name, and its resource id if it has one
/// (`odata.id` for the classic API, `id` for Resource Manager).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobNames {
    /// `Name` / `name`.
    pub name: String,
    /// `odata.id` / `id`, when present.
    pub id: Option<String>,
}

impl JobNames {
    /// True when both names point at `job` (names compare without case, as Azure's do).
    fn are_for(&self, job: &JobName) -> bool {
        let job = job.as_str();
        let id_matches = self.id.as_deref().is_none_or(|id| {
            let id = id.to_ascii_lowercase();
            let job = job.to_ascii_lowercase();
            id == job || id.ends_with(&format!("/{job}")) || id.ends_with(&format!("('{job}')"))
        });
        self.name.eq_ignore_ascii_case(job) && id_matches
    }
}

/// Checks that `observation` answers for `job` and is within bounds; drops drives listed
/// twice (the first listing counts).
///
/// # Errors
/// [`SourceError::Decode`] naming what is wrong (never more than the offending names).
pub fn check(observation: &mut Observation, job: &JobName) -> Result<(), SourceError> {
    if !observation.names.are_for(job) {
        return Err(SourceError::Decode(format!(
            "the answer is for job {:?}, not {:?}",
            short(&observation.names.name),
            short(job.as_str())
        )));
    }
    let snapshot = &mut observation.snapshot;
    if snapshot.drives.len() > MAX_DRIVES {
        return Err(SourceError::Decode(format!(
            "{} drives listed; at most {MAX_DRIVES} are accepted",
            snapshot.drives.len()
        )));
    }
    let too_long = |value: Option<&str>| value.is_some_and(|v| v.chars().count() > MAX_FIELD_CHARS);
    let drives_too_long = snapshot.drives.iter().any(|d| {
        too_long(Some(d.drive_id.as_str()))
            || too_long(d.state.as_ref().map(|s| s.as_str()))
            || too_long(d.copy_status.as_ref().map(|s| s.as_str()))
    });
    if too_long(Some(snapshot.state.as_str()))
        || too_long(snapshot.job_type.as_deref())
        || drives_too_long
    {
        return Err(SourceError::Decode(format!(
            "a watched field is longer than {MAX_FIELD_CHARS} characters"
        )));
    }
    let mut seen = HashSet::new();
    snapshot
        .drives
        .retain(|drive| seen.insert(drive.drive_id.clone()));
    Ok(())
}

/// At most 64 characters of a name from outside, for a message.
fn short(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{DriveSnapshot, JobSnapshot, JobState},
        source::{ChangeRule, Document},
    };

    fn names(name: &str, id: Option<&str>) -> JobNames {
        JobNames {
            name: name.into(),
            id: id.map(Into::into),
        }
    }

    #[test]
    fn an_answer_names_the_job_asked_by_name_and_id() {
        let job = JobName::from("MySampleJob");
        for ok in [
            names("MySampleJob", None),
            names("mysamplejob", Some("MySampleJob")),
            names("MySampleJob", Some("/subscriptions/s/resourceGroups/r/providers/Microsoft.ImportExport/jobs/MySampleJob")),
            names("MySampleJob", Some("https://management.core.windows.net/s/services/importexport/jobs('MySampleJob')")),
        ] {
            assert!(ok.are_for(&job), "{ok:?}");
        }
        for other in [
            names("OtherJob", None),
            names("MySampleJob", Some("/subscriptions/s/.../jobs/OtherJob")),
            names("MySampleJob2", Some("MySampleJob2")),
            names("", None),
        ] {
            assert!(!other.are_for(&job), "{other:?}");
        }
    }

    #[test]
    fn a_drive_listed_twice_counts_once_and_long_fields_are_refused() {
        let drive = |id: &str| DriveSnapshot::new(id.into(), Some("Received".into()), None, None);
        let mut snapshot = JobSnapshot::assemble(None, "Transferring".into(), None, None);
        snapshot.drives = vec![drive("A"), drive("B"), drive("A")];
        let mut observation = Observation {
            snapshot,
            document: Document::default(),
            change_rule: ChangeRule::WatchedFields,
            names: names("J", None),
            last_modified: None,
            request_id: None,
            created_at: None,
        };
        let job = JobName::from("J");
        check(&mut observation, &job).unwrap();
        let ids: Vec<&str> = observation
            .snapshot
            .drives
            .iter()
            .map(|d| d.drive_id.as_str())
            .collect();
        assert_eq!(ids, ["A", "B"]);
        observation.snapshot.state = JobState::new("x".repeat(MAX_FIELD_CHARS + 1));
        let refused = check(&mut observation, &job).unwrap_err().to_string();
        assert!(refused.contains("longer than 256"), "{refused}");
    }
}
