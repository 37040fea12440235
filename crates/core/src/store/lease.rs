//! Who leads on a PostgreSQL database: a lease row (`leader`, one row) with an expiry
//! on the database server's clock and an epoch that every takeover increments. Only the
//! daemon holding the current epoch polls and delivers; every one of its writes first
//! locks the row (`FOR SHARE`) and checks the epoch and the expiry, so a daemon that lost
//! the lease (paused past it, cut off, or replaced) cannot commit anything after a
//! standby took over: the takeover's `UPDATE` waits for the write under way, and every
//! later write sees the new epoch. Why a row and not an advisory lock: a lock held by a
//! session outlives a paused (SIGSTOP) or hung process whose connection stays open, and
//! does not survive a connection pooler; a lease expires by itself.

use std::time::Duration;

use sqlx::AnyPool;

use super::StoreError;

/// How long a standby's try waits for the lease row's lock.
const LOCK_WAIT: Duration = Duration::from_millis(500);

/// What a standby sees of the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Who holds it (host and pid).
    pub holder: String,
    /// Its epoch.
    pub epoch: i64,
    /// Whether it is still within its lease.
    pub live: bool,
}

/// Milliseconds of a duration, for `interval` arithmetic in SQL.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Takes the lease if nobody holds a live one; returns the new epoch. It waits at most
/// [`LOCK_WAIT`] for the row (a standby looks with [`holder`] first, without a lock): while the leader commits (its writes lock the row for a
/// moment) or sits frozen inside a transaction (until PostgreSQL ends that session), the
/// answer is "not now", and the standby asks again, instead of a statement left waiting
/// on the server that might take the lease after its caller stopped listening.
///
/// # Errors
/// Database errors.
pub async fn try_acquire(
    pool: &AnyPool,
    me: &str,
    lease: Duration,
) -> Result<Option<i64>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "SET LOCAL lock_timeout = {}",
        LOCK_WAIT.as_millis()
    ))
    .execute(&mut *tx)
    .await?;
    let taken = sqlx::query_scalar(
        "INSERT INTO leader (id, epoch, holder, expires_at, acquired_at)
         VALUES (1, 1, $1, now() + $2 * interval '1 millisecond', now())
         ON CONFLICT (id) DO UPDATE SET epoch = leader.epoch + 1, holder = excluded.holder,
             expires_at = excluded.expires_at, acquired_at = excluded.acquired_at
         WHERE leader.expires_at < now()
         RETURNING epoch",
    )
    .bind(me)
    .bind(millis(lease))
    .fetch_optional(&mut *tx)
    .await;
    let epoch = match taken {
        Ok(epoch) => epoch,
        // lock_not_available: the row is busy; the transaction is rolled back on drop.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    Ok(epoch)
}

/// Extends the lease of `epoch`; false when another daemon has taken it since.
///
/// # Errors
/// Database errors (the lease is then neither extended nor known lost).
pub async fn renew(pool: &AnyPool, epoch: i64, lease: Duration) -> Result<bool, StoreError> {
    let renewed: Option<i64> = sqlx::query_scalar(
        "UPDATE leader SET expires_at = now() + $2 * interval '1 millisecond'
         WHERE id = 1 AND epoch = $1 RETURNING epoch",
    )
    .bind(epoch)
    .bind(millis(lease))
    .fetch_optional(pool)
    .await?;
    Ok(renewed.is_some())
}

/// Gives the lease up (a clean shutdown), so that a standby need not wait for it to
/// expire.
///
/// # Errors
/// Database errors.
pub async fn release(pool: &AnyPool, epoch: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE leader SET expires_at = now() WHERE id = 1 AND epoch = $1")
        .bind(epoch)
        .execute(pool)
        .await?;
    Ok(())
}

/// The current holder, if any daemon ever led.
///
/// # Errors
/// Database errors.
pub async fn holder(pool: &AnyPool) -> Result<Option<Holder>, StoreError> {
    let row: Option<(String, i64, i64)> = sqlx::query_as(
        "SELECT holder, epoch, CASE WHEN expires_at > now() THEN 1 ELSE 0 END FROM leader WHERE id = 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(holder, epoch, live)| Holder {
        holder,
        epoch,
        live: live == 1,
    }))
}

/// The words a lost lease raises inside [`begin`]'s first statement.
/// (Inside a SQL string literal: no quote in it.)
const LOST: &str = "iewatch: the lease of this daemon is lost";

/// Begins a write transaction that commits only while `epoch` holds a live lease: the
/// lease row is locked against a takeover until the commit, and the epoch and expiry are
/// checked, in the same round trip as `BEGIN`. Epoch 0 (a store that does not lead:
/// SQLite, where the file lock makes one writer, or a command) checks nothing.
///
/// The check comes first in the one simple query: PostgreSQL runs it in an implicit
/// transaction that `BEGIN` turns into the transaction block (the row lock is kept); when
/// the lease is lost the check fails, nothing after it runs, and the connection is left
/// idle, as clean as before.
///
/// # Errors
/// [`StoreError::LeaseLost`] when the lease is not held; database errors.
pub(super) async fn begin(
    pool: &AnyPool,
    epoch: i64,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
    if epoch == 0 {
        return Ok(pool.begin().await?);
    }
    // `epoch` is our own integer, written as a literal: a simple query takes no binds.
    let statement = format!(
        "SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM leader WHERE id = 1 AND epoch = {epoch} \
         AND expires_at > now() FOR SHARE) THEN '1' ELSE '{LOST}' END AS integer); BEGIN"
    );
    match pool.begin_with(statement).await {
        Ok(tx) => Ok(tx),
        Err(sqlx::Error::Database(e)) if e.message().contains(LOST) => Err(StoreError::LeaseLost),
        Err(e) => Err(e.into()),
    }
}
