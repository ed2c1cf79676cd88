//! The notification outbox: one row per (match event, charity), keyed by an idempotency key
//! derived from the event, written exactly once by this projection. The delivery worker
//! (`api::push`) reads due rows and records each attempt here; it never re-fires on a
//! rebuild, because rebuilding inserts the same keys (ON CONFLICT DO NOTHING).

use crate::runner::{Projection, ProjectionError};
use sqlx::{Any, AnyPool, Row, Transaction};
use triad_domain::donation::DonationEvent;
use triad_eventstore::store::Migration;
use triad_eventstore::RecordedEvent;

const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS notifications (
    key text PRIMARY KEY,
    charity_id text NOT NULL,
    donation_id text NOT NULL,
    payload text NOT NULL,
    status text NOT NULL,
    attempts bigint NOT NULL,
    next_attempt_ms bigint NOT NULL,
    last_error text,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_due_idx ON notifications (status, next_attempt_ms);
"#;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    postgres: DDL,
    sqlite: DDL,
}];

pub struct NotificationOutbox;

#[async_trait::async_trait]
impl Projection for NotificationOutbox {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn migrations(&self) -> &'static [Migration] {
        MIGRATIONS
    }

    fn tables(&self) -> &'static [&'static str] {
        &["notifications"]
    }

    /// Rebuilding would forget what was delivered and send it again.
    fn replayable(&self) -> bool {
        false
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        e: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if e.aggregate_type != "Donation" || e.event_type != "MatchesProposed" {
            return Ok(());
        }
        let DonationEvent::MatchesProposed { proposals, .. } = e.decode::<DonationEvent>()? else {
            return Ok(());
        };
        let event_id = e
            .metadata()
            .map(|m| m.event_id)
            .unwrap_or_else(|| e.position.to_string());
        for p in proposals {
            let key = format!("{event_id}:{}", p.charity_id);
            let payload = serde_json::json!({
                "idempotencyKey": key,
                "type": "donationMatched",
                "donationId": e.aggregate_id,
                "charityId": p.charity_id,
                "distanceKm": p.distance_km,
                "position": e.position,
            });
            sqlx::query("INSERT INTO notifications (key, charity_id, donation_id, payload, status, attempts, next_attempt_ms, last_error, position) VALUES ($1, $2, $3, $4, 'pending', 0, 0, NULL, $5) ON CONFLICT (key) DO NOTHING")
                .bind(&key)
                .bind(&p.charity_id)
                .bind(&e.aggregate_id)
                .bind(payload.to_string())
                .bind(e.position)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub key: String,
    pub charity_id: String,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
}

fn row(r: &sqlx::any::AnyRow) -> Result<Notification, sqlx::Error> {
    Ok(Notification {
        key: r.try_get("key")?,
        charity_id: r.try_get("charity_id")?,
        payload: r.try_get("payload")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_ms: r.try_get("next_attempt_ms")?,
        last_error: r.try_get("last_error")?,
    })
}

const COLUMNS: &str = "key, charity_id, payload, status, attempts, next_attempt_ms, last_error";

/// Pending notifications whose next attempt is due, oldest first.
pub async fn due(
    pool: &AnyPool,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<Notification>, ProjectionError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM notifications WHERE status = 'pending' AND next_attempt_ms <= $1 ORDER BY position, key LIMIT $2")).bind(now_ms).bind(limit).fetch_all(pool).await?;
    rows.iter()
        .map(row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(Into::into)
}

/// Takes a notification for one attempt: moves its next attempt to `lease_until` if nobody
/// else took it first (several replicas may run workers). False: someone else has it.
pub async fn lease(
    pool: &AnyPool,
    n: &Notification,
    lease_until_ms: i64,
) -> Result<bool, ProjectionError> {
    let done = sqlx::query("UPDATE notifications SET next_attempt_ms = $1 WHERE key = $2 AND status = 'pending' AND next_attempt_ms = $3 AND attempts = $4")
        .bind(lease_until_ms)
        .bind(&n.key)
        .bind(n.next_attempt_ms)
        .bind(n.attempts)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn delivered(pool: &AnyPool, key: &str) -> Result<(), ProjectionError> {
    sqlx::query("UPDATE notifications SET status = 'delivered', attempts = attempts + 1, last_error = NULL WHERE key = $1").bind(key).execute(pool).await?;
    Ok(())
}

/// Records a failed attempt: retry at `next_attempt_ms`, or dead-letter it.
pub async fn failed(
    pool: &AnyPool,
    key: &str,
    error: &str,
    next_attempt_ms: Option<i64>,
) -> Result<(), ProjectionError> {
    match next_attempt_ms {
        Some(at) => sqlx::query("UPDATE notifications SET attempts = attempts + 1, next_attempt_ms = $1, last_error = $2 WHERE key = $3").bind(at).bind(error).bind(key).execute(pool).await?,
        None => sqlx::query("UPDATE notifications SET status = 'dead', attempts = attempts + 1, last_error = $1 WHERE key = $2").bind(error).bind(key).execute(pool).await?,
    };
    Ok(())
}

pub async fn with_status(
    pool: &AnyPool,
    status: &str,
    limit: i64,
) -> Result<Vec<Notification>, ProjectionError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE status = $1 ORDER BY position, key LIMIT $2"
    ))
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(Into::into)
}

/// Puts every dead-lettered notification back in line, with fresh attempts.
pub async fn redrive(pool: &AnyPool) -> Result<u64, ProjectionError> {
    Ok(sqlx::query("UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_ms = 0 WHERE status = 'dead'").execute(pool).await?.rows_affected())
}
