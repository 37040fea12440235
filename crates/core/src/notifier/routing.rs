//! Which webhooks want which events: the `events`, `jobs`, `min_severity` and
//! `progress_step` filters. Decided when an event is recorded, so the outbox holds exactly
//! what will be sent.

use crate::{
    config::{Channel, Webhook},
    events::{filters_match, ChangeValue, Event, OutboxEntry},
    model::JobName,
};

/// Every delivery to queue for `events` of `job`.
pub fn route(webhooks: &[Webhook], job: &JobName, events: &[Event]) -> Vec<OutboxEntry> {
    let mut outbox = Vec::new();
    for (index, event) in events.iter().enumerate() {
        for webhook in webhooks {
            if wants(webhook, job, event) {
                outbox.push(OutboxEntry {
                    event: index,
                    webhook: webhook.name.clone(),
                });
            }
        }
    }
    outbox
}

/// True when `webhook`'s filters select `event` of `job`.
pub fn wants(webhook: &Webhook, job: &JobName, event: &Event) -> bool {
    let job_selected = webhook.jobs.iter().any(|j| j == "*" || j == job.as_str());
    let (takes, closes) = channel_takes(webhook, event);
    job_selected
        && filters_match(&webhook.events, event.event_type)
        && (event.severity >= webhook.min_severity || closes)
        && (!event.event_type.is_progress() || crosses_step(webhook.progress_step, event))
        && takes
}

/// Whether the channel takes the event, and whether it closes an incident (which no
/// severity filter holds back: an incident opened must be closable). PagerDuty takes only
/// what opens or closes an incident; every other channel takes every event its filters
/// select.
fn channel_takes(webhook: &Webhook, event: &Event) -> (bool, bool) {
    if !matches!(webhook.channel, Channel::PagerDuty { .. }) {
        return (true, false);
    }
    match super::incidents::incident_of(
        event.event_type,
        event.severity,
        event.drive_id.as_ref().map(|d| d.as_str()),
        event.to_text().as_deref(),
    ) {
        None => (false, false),
        Some(incident) => (true, incident.only_closes()),
    }
}

/// With a step, progress alerts only when a multiple of it is crossed, and at 100.
fn crosses_step(step: Option<u32>, event: &Event) -> bool {
    let Some(step) = step.map(i64::from).filter(|s| *s > 0) else {
        return true;
    };
    let percent = |v: &Option<ChangeValue>| v.as_ref().and_then(ChangeValue::percent);
    let Some(to) = percent(&event.to) else {
        return false;
    };
    if to == 100 {
        return true;
    }
    match percent(&event.from) {
        None => to % step == 0,
        Some(from) => from.div_euclid(step) != to.div_euclid(step),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{events::EventType, model::Severity};

    fn progress(from: Option<i64>, to: i64) -> Event {
        Event::change(
            EventType::JobProgress,
            None,
            from.map(ChangeValue::Percent),
            Some(ChangeValue::Percent(to)),
            Severity::Info,
        )
    }

    #[test]
    fn progress_step_fires_on_crossing_and_at_100() {
        let step = Some(10);
        assert!(!crosses_step(step, &progress(Some(11), 19)));
        assert!(crosses_step(step, &progress(Some(19), 20)));
        assert!(crosses_step(step, &progress(Some(5), 37)));
        assert!(crosses_step(step, &progress(Some(99), 100)));
        assert!(crosses_step(step, &progress(None, 0)));
        assert!(!crosses_step(step, &progress(None, 3)));
        assert!(
            crosses_step(step, &progress(Some(40), 35)),
            "a drop across a multiple counts too"
        );
        assert!(crosses_step(None, &progress(Some(11), 12)));
    }
}
