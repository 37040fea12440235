//! The daemon's heartbeat: every refresh interval (half the systemd watchdog, at most
//! 30 s) it checks that the database file is still the one opened, pets the watchdog
//! while every part makes progress, and refreshes the status line. It is a plain thread
//! that sleeps: a tokio timer that far out wakes its runtime three times on the way down
//! the timer wheel, and an idle daemon should wake once. Only when there is async work
//! (poll times to write, an outbox backlog that may have moved) does it hand a beat to the
//! run loop.

use std::{
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::Duration,
};

use crate::{store::Writer, systemd::Systemd, telemetry::Telemetry};

/// What the heartbeat hands the run loop.
#[derive(Debug)]
pub enum Beat {
    /// Poll times are pending (write them) or the outbox moved (read the backlog).
    Refresh { poll_times: bool, backlog: bool },
    /// The database file was deleted or replaced: the daemon must stop.
    Lost(String),
}

/// The running heartbeat; it stops when this is dropped.
#[derive(Debug)]
pub struct Heartbeat {
    _stop: mpsc::Sender<()>,
}

/// Starts the heartbeat. Beats go to `beats`; if the thread dies, `beats` closes, which
/// the run loop takes as a death.
///
/// # Errors
/// The thread cannot be started.
pub fn start(
    interval: Duration,
    store: Writer,
    telemetry: Telemetry,
    systemd: Systemd,
    beats: tokio::sync::mpsc::Sender<Beat>,
) -> std::io::Result<Heartbeat> {
    let (stop, stopped) = mpsc::channel::<()>();
    thread::Builder::new()
        .name("iewatch-heartbeat".into())
        .spawn(move || {
            // The outbox activity at the last refresh handed over; none yet.
            let mut refreshed_at = None;
            // Sleeps the interval; a message or the sender's drop ends the thread.
            while stopped.recv_timeout(interval) == Err(RecvTimeoutError::Timeout) {
                if let Err(e) = store.check_identity() {
                    let _ = beats.blocking_send(Beat::Lost(e.to_string()));
                    return;
                }
                let activity = telemetry.outbox_activity();
                let backlog = refreshed_at != Some(activity);
                let poll_times = store.poll_times_pending();
                // Full means a beat is already waiting: one is enough.
                if (backlog || poll_times)
                    && beats
                        .try_send(Beat::Refresh {
                            poll_times,
                            backlog,
                        })
                        .is_ok()
                {
                    refreshed_at = Some(activity);
                }
                report(&telemetry, &systemd);
            }
        })?;
    Ok(Heartbeat { _stop: stop })
}

/// Sets the status line and pets the watchdog, unless a part is stuck.
pub fn report(telemetry: &Telemetry, systemd: &Systemd) {
    let (watched, failing, backlog) = telemetry.counts();
    let role = telemetry
        .role()
        .map(|r| format!("{r}: "))
        .unwrap_or_default();
    systemd.status(&format!(
        "{role}watching {watched} jobs, {failing} failing, {backlog} alerts pending"
    ));
    match telemetry.liveness_problem() {
        None => systemd.watchdog(),
        Some(stuck) => {
            tracing::error!("not making progress ({stuck}): withholding the watchdog")
        }
    }
}
