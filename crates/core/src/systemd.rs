//! The systemd notify protocol (sd-notify): READY, STATUS, WATCHDOG, RELOADING with
//! MONOTONIC_USEC, STOPPING. Silent when not started by systemd (no NOTIFY_SOCKET).

use std::time::Duration;

use sd_notify::NotifyState;

/// The daemon's line to systemd.
#[derive(Clone, Debug)]
pub struct Systemd {
    watchdog: Option<Duration>,
}

impl Systemd {
    /// Reads WATCHDOG_USEC (and WATCHDOG_PID, which, when set, must be this process: as
    /// sd_watchdog_enabled(3) does) from the environment. A watchdog under a second or
    /// over a day is taken as the nearest of the two.
    pub fn from_env() -> Systemd {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let for_us = var("WATCHDOG_PID").is_none_or(|pid| pid == u64::from(std::process::id()));
        let watchdog = var("WATCHDOG_USEC")
            .filter(|&usec| usec > 0 && for_us)
            .map(|usec| Duration::from_micros(usec.clamp(1_000_000, 86_400_000_000)));
        Systemd { watchdog }
    }

    /// How often WATCHDOG=1 must be sent, if systemd watches.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!("cannot notify systemd: {e}");
        }
    }

    /// Config read and migrations done.
    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// A one-line status for `systemctl status`.
    pub fn status(&self, text: &str) {
        self.send(&[NotifyState::Status(text)]);
    }

    /// The loops are making progress (nothing is sent when systemd does not watch).
    pub fn watchdog(&self) {
        if self.watchdog_interval().is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// A reload starts (Type=notify-reload wants MONOTONIC_USEC with it).
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// Shutdown starts.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }
}
