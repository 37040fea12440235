//! What one job's page reads: a page of its timeline (the newest events, then older
//! ones on request) and the events its charts are drawn from. A job with 20,000 events
//! costs its page one page of rows, not the whole history.

use super::{
    reads::{Details, EventParam},
    EventRecord, Store, StoreError,
};

/// One page of a job's timeline.
#[derive(Debug, Default)]
pub struct TimelinePage {
    /// The events, oldest first.
    pub events: Vec<EventRecord>,
    /// The id to ask `before` for the next older page, when there are older events.
    pub older: Option<i64>,
}

/// The event types the page's charts read: state changes and drive progress.
const CHART_TYPES: &str = "('job.first_seen', 'job.state_changed', 'drive.progress')";

impl Store {
    /// The job's (`account`, `name`) newest `limit` events before event `before` (None:
    /// the newest), oldest first, and whether older ones remain.
    ///
    /// # Errors
    /// Database errors, or a stored details value that is not JSON.
    pub async fn timeline_page(
        &self,
        account: &str,
        name: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<TimelinePage, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let jobs = self.job_named(&mut conn, account, name).await?;
        // One more than asked for says whether an older page exists.
        // Without `details`: the page shows none (on PostgreSQL the rows then come from
        // the index alone).
        let columns = Details::Skip.columns();
        let sqlite = format!(
            "(SELECT * FROM (SELECT {columns} FROM events WHERE job_id = $1 AND id < $2
                             ORDER BY id DESC LIMIT $3) ORDER BY id)"
        );
        let postgres = format!(
            "(SELECT {columns} FROM events WHERE job_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3) e"
        );
        let params = [
            EventParam::Int(before.unwrap_or(i64::MAX)),
            EventParam::Int(i64::from(limit) + 1),
        ];
        let mut events = self
            .events_in(&mut conn, jobs, [&sqlite, &postgres], &params)
            .await?;
        let older = if events.len() > limit as usize {
            events.remove(0);
            events.first().map(|e| e.id)
        } else {
            None
        };
        Ok(TimelinePage { events, older })
    }

    /// The job's state changes and drive progress, oldest first, without their details:
    /// what its copy curves and time in each state are drawn from.
    ///
    /// # Errors
    /// Database errors, or a stored details value that is not JSON.
    pub async fn chart_events(
        &self,
        account: &str,
        name: &str,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let jobs = self.job_named(&mut conn, account, name).await?;
        // Without `details`: the charts never read them, and parsing 20,000 of them
        // was most of a long job's page.
        let rows = format!(
            "(SELECT {} FROM events WHERE job_id = $1 AND type IN {CHART_TYPES} ORDER BY id)",
            Details::Skip.columns()
        );
        let (sqlite, postgres) = (rows.clone(), format!("{rows} e"));
        self.events_in(&mut conn, jobs, [&sqlite, &postgres], &[])
            .await
    }
}
