//! The commands that read or change the database: `status`, `history`, `deliveries`,
//! `redeliver`, `prune`, `ack`, `mute`. Each opens the database as it is (none creates
//! or migrates one) and says plainly when a job or delivery does not exist.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use super::{flags::DatabaseArgs, service::load_config};
use crate::{
    config,
    notifier::nudge::nudge_daemon,
    report,
    store::{is_postgres_url, Database, Details, Store},
    wall_clock,
};

/// `iewatch status`: a line per job, or JSON.
pub(super) async fn status(db: &DatabaseArgs, json: bool) -> anyhow::Result<ExitCode> {
    let store = open(db).await?;
    let jobs = store.status().await?;
    print_report(json, &jobs, |jobs| {
        report::status_text(jobs, wall_clock::now())
    })
}

/// `iewatch history`: one job's events, oldest first.
pub(super) async fn history(
    job: &str,
    since: Option<Duration>,
    db: &DatabaseArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = open(db).await?;
    if !store.has_job(job).await? {
        errln!("no job named {job:?} in {}", store.database());
        return Ok(ExitCode::FAILURE);
    }
    // Any --since reaches back at most to 1970: no time arithmetic can overflow on it.
    let since = since.map(|d| wall_clock::now().saturating_sub(d));
    // The lines show no details; only `--json` reads them.
    let details = if json { Details::Read } else { Details::Skip };
    let entries = store.history(job, since, details).await?;
    print_report(json, &entries, |entries| report::history_text(entries))
}

/// `iewatch deliveries`: the delivery log, newest first.
pub(super) async fn deliveries(
    failed: bool,
    limit: u32,
    db: &DatabaseArgs,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = open(db).await?;
    let rows = store.deliveries(failed, limit).await?;
    print_report(json, &rows, |rows| report::deliveries_text(rows))
}

/// `iewatch redeliver ID`: queued again, and a running daemon woken to send it.
pub(super) async fn redeliver(id: i64, db: &DatabaseArgs) -> anyhow::Result<ExitCode> {
    let store = open(db).await?;
    if !store.redeliver(id, wall_clock::now()).await? {
        errln!("no delivery {id}");
        return Ok(ExitCode::FAILURE);
    }
    nudge_daemon(&store).await;
    outln!("delivery {id} queued again");
    Ok(ExitCode::SUCCESS)
}

/// `iewatch ack JOB`: its current reminders stop, recorded in its history.
pub(super) async fn ack(
    job: &str,
    note: Option<&str>,
    db: &DatabaseArgs,
) -> anyhow::Result<ExitCode> {
    let store = open(db).await?;
    let matched = store.acknowledge(job, note, wall_clock::now()).await?;
    // An open PagerDuty incident is resolved now, not at the next safety re-read.
    nudge_daemon(&store).await;
    job_answer(job, matched, "acknowledged; its current reminders stop")
}

/// `iewatch mute JOB --for D` (`for` is `None` for `--off`; flags bounded it).
pub(super) async fn mute(
    job: &str,
    duration: Option<Duration>,
    db: &DatabaseArgs,
) -> anyhow::Result<ExitCode> {
    let until = duration.map(|d| wall_clock::now().saturating_add(d));
    let store = open(db).await?;
    let matched = store.mute(job, until).await?;
    let what = match until {
        Some(until) => format!(
            "silenced until {}: its alerts until then are not sent, then or later (events are still recorded)",
            until.rfc3339_seconds()
        ),
        None => "no longer muted".to_owned(),
    };
    job_answer(job, matched, &what)
}

/// `iewatch prune [--dry-run]`: a line per job and a total. The retention is `--retention`,
/// else the config's.
pub(super) async fn prune(
    dry_run: bool,
    retention: Option<Duration>,
    db: &DatabaseArgs,
) -> anyhow::Result<ExitCode> {
    let retention = match retention {
        Some(retention) => retention,
        None => match load_config(&db.config.config, false).map(|c| c.daemon.retention) {
            Ok(Some(retention)) => retention,
            Ok(None) => {
                errln!("no retention: set daemon.retention in the config or give --retention 400d");
                return Ok(ExitCode::FAILURE);
            }
            Err(_) => {
                errln!("give --retention, or fix the config");
                return Ok(ExitCode::FAILURE);
            }
        },
    };
    let cutoff = wall_clock::now().saturating_sub(retention);
    let store = open(db).await?;
    let pruned = store.prune(cutoff, dry_run).await?;
    store.close().await;
    for job in &pruned {
        let kept = match job.kept {
            0 => String::new(),
            n => format!("; {n} alert(s) not delivered yet are kept"),
        };
        outln!(
            "{}/{}  ended {}  {} event(s), {} deliveries{kept}",
            job.account,
            job.name,
            job.ended_at.sql_text(),
            job.events,
            job.deliveries
        );
    }
    let events: i64 = pruned.iter().map(|p| p.events).sum();
    let verb = if dry_run { "would remove" } else { "removed" };
    outln!(
        "{verb} {events} event(s) of {} job(s) that ended before {}",
        pruned.len(),
        cutoff.rfc3339_seconds()
    );
    Ok(ExitCode::SUCCESS)
}

/// The database `--database` names, else the config's. A `postgres://` URL takes the
/// config's password file only when the config names the same URL.
pub(super) async fn open(args: &DatabaseArgs) -> anyhow::Result<Store> {
    let configured = config::database_of(&args.config.config);
    let database = match &args.database {
        None => configured,
        Some(url) if is_postgres_url(url) => {
            let password_file = match &configured {
                Database::Postgres(pg) if &pg.url == url => pg.password_file.clone(),
                _ => None,
            };
            Database::parse(url, password_file)
        }
        Some(path) => Database::File(PathBuf::from(path)),
    };
    Ok(Store::open_existing_database(&database).await?)
}

/// `JOB: what` for the jobs a command changed, or an error when none matched.
fn job_answer(job: &str, matched: usize, what: &str) -> anyhow::Result<ExitCode> {
    if matched == 0 {
        errln!("no job {job} in the database");
        return Ok(ExitCode::FAILURE);
    }
    outln!("{job}: {what}");
    Ok(ExitCode::SUCCESS)
}

/// Prints a report as pretty JSON (for scripts) or as its aligned text.
fn print_report<T: serde::Serialize + ?Sized>(
    json: bool,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        outln!("{}", serde_json::to_string_pretty(value)?);
    } else {
        out!("{}", text(value));
    }
    Ok(ExitCode::SUCCESS)
}
