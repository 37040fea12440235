//! Leader and standby on PostgreSQL: every `iewatch run` on one database tries to lead;
//! the one holding the lease (see [`crate::store::lease`]) polls and delivers, the others
//! stand by, serve `/healthz`, `/metrics` and the status page, and try again every
//! second. A leader renews its lease every fifth of it and stops (the process exits,
//! systemd starts it again as a standby) as soon as it learns another daemon took over,
//! or its own clock says the lease ran out without a renewal. Its writes are fenced by the
//! database besides, so nothing it does after losing the lease is recorded.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::{
    store::{lease, Writer},
    systemd::Systemd,
    telemetry::Telemetry,
};

/// How often a standby asks for the lease.
pub const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// Who this daemon is to the others: host and pid (shown by standbys and in the lease).
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Stands by until this daemon holds the lease; returns its epoch, or None if
/// `shutdown` came first. Meanwhile the status line and the metrics say standby, and the
/// watchdog is petted (a standby has nothing to be stuck on but the database, which it
/// reports).
/// A database that cannot be reached is reported and tried again.
pub async fn stand_by(
    store: &Writer,
    lease_time: Duration,
    telemetry: &Telemetry,
    systemd: &Systemd,
    shutdown: &CancellationToken,
) -> Option<i64> {
    let me = holder_name();
    let mut announced = None;
    loop {
        let attempt = tokio::time::timeout(
            STANDBY_RETRY.max(lease_time / 5),
            try_to_lead(store, &me, lease_time),
        );
        let line = match attempt.await {
            Ok(Ok(epoch)) => {
                tracing::info!(epoch, holder = %me, "leading: this daemon holds the lease");
                telemetry.set_role(true, &format!("leader (epoch {epoch})"));
                return Some(epoch);
            }
            Ok(Err(line)) => line,
            Err(_) => "standby: the database does not answer".to_owned(),
        };
        if announced.as_ref() != Some(&line) {
            tracing::info!("{line}");
            telemetry.set_role(false, &line);
            systemd.status(&line);
            announced = Some(line);
        }
        systemd.watchdog();
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(STANDBY_RETRY) => {}
        }
    }
}

/// One try of a standby: the epoch if it took the lease, else its status line. It looks
/// at the row without a lock first, and tries to take it only when the lease has run
/// out: a standby asking every second must not queue on the row that the leader's
/// renewals and writes lock.
async fn try_to_lead(store: &Writer, me: &str, lease_time: Duration) -> Result<i64, String> {
    let seen = lease::holder(store.pool()).await;
    if seen.is_err() || matches!(&seen, Ok(Some(h)) if h.live) {
        return Err(standby_line(seen));
    }
    match lease::try_acquire(store.pool(), me, lease_time).await {
        Ok(Some(epoch)) => Ok(epoch),
        // Another standby was first, or the row was busy: say who leads now.
        Ok(None) => Err(standby_line(lease::holder(store.pool()).await)),
        Err(e) => Err(standby_line(Err(e))),
    }
}

/// A standby's status line from what it saw of the lease.
fn standby_line(seen: Result<Option<lease::Holder>, crate::store::StoreError>) -> String {
    match seen {
        Ok(Some(current)) => format!(
            "standby: {} leads (epoch {})",
            current.holder, current.epoch
        ),
        Ok(None) => "standby".to_owned(),
        Err(e) => format!("standby: cannot reach the database: {e}"),
    }
}

/// Holds lease `epoch` while the daemon leads: renews it every fifth of `lease_time`.
/// Returns why it was lost: another daemon took over, or no renewal succeeded for a whole
/// lease (the database unreachable, or this process paused), after which a standby may
/// already lead.
pub async fn hold(store: Writer, epoch: i64, lease_time: Duration) -> String {
    let every = lease_time / 5;
    let mut valid_until = Instant::now() + lease_time;
    store.lease_held_until(valid_until);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let asked = Instant::now();
        // A renewal may take all that is left of the lease: cut off at every fifth, one
        // that needs a new connection under load would be abandoned (and its connection
        // with it) again and again while the lease runs out.
        let left = valid_until.saturating_duration_since(asked);
        if left.is_zero() {
            break; // paused past it: by this daemon's own clock a standby may lead
        }
        match tokio::time::timeout(left, lease::renew(store.pool(), epoch, lease_time)).await {
            Ok(Ok(true)) => {
                valid_until = asked + lease_time;
                store.lease_held_until(valid_until);
                let took = asked.elapsed();
                if took > every {
                    tracing::warn!("renewing the lease took {took:?}, more than a fifth of it");
                }
            }
            Ok(Ok(false)) => {
                return format!("lost the lease (epoch {epoch}): another iewatch took over")
            }
            Ok(Err(e)) => tracing::warn!("cannot renew the lease: {e}"),
            Err(_) => tracing::warn!(
                "cannot renew the lease: the database did not answer within {left:?}"
            ),
        }
        if Instant::now() >= valid_until {
            break;
        }
    }
    format!(
        "lost the lease (epoch {epoch}): not renewed for {lease_time:?}, a standby may lead now"
    )
}
