//! The ERP relay: the event log is the outbox. Sold and unsold auctions become integration
//! events (public shape: schemas/integration/), delivered to the ERP over HTTP.
//!
//! - At least once, in order per aggregate: the checkpoint moves only past events the ERP
//!   acknowledged (or dead-lettered); each message carries its idempotency key (the source
//!   event id) and source position, so the ERP applies each exactly once.
//! - Failures are retried with exponential backoff and full jitter. After `max_attempts` a
//!   message is dead-lettered; later messages of the same aggregate are held behind it (order
//!   per aggregate), messages of other aggregates flow on. `triad relay --dead-letters` lists,
//!   `--redrive` delivers them again in order.
//! - One active relay among replicas: a PostgreSQL session advisory lock elects the leader; when
//!   its process dies, its connection closes, the lock is released and another takes over.
//!
//! Never a dual write: the relay only reads the log and records its own progress.

use chrono::{SecondsFormat, Utc};
use rand::Rng;
use serde_json::{json, Value};
use sqlx::Row;
use std::time::Duration;
use triad_domain::auction::{AuctionEvent, CloseOutcome};
use triad_eventstore::store::{LogFilter, Migration};
use triad_eventstore::{db::Db, EventStore, RecordedEvent, StoreError};

pub const NAME: &str = "erp-relay";
/// Log events taken per step at most; the checkpoint moves once per step.
const RELAY_CHUNK: usize = 64;
/// Aggregates whose messages are in flight to the ERP at once.
const RELAY_IN_FLIGHT: usize = 16;
const LEADER_LOCK: i64 = 7305071247;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    postgres: "CREATE TABLE IF NOT EXISTS relay_dead_letters (key text PRIMARY KEY, aggregate_id text NOT NULL, position bigint NOT NULL, message text NOT NULL, status text NOT NULL, attempts bigint NOT NULL, last_error text)",
    sqlite: "CREATE TABLE IF NOT EXISTS relay_dead_letters (key text PRIMARY KEY, aggregate_id text NOT NULL, position integer NOT NULL, message text NOT NULL, status text NOT NULL, attempts integer NOT NULL, last_error text)",
}];

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub url: String,
    /// Sent as the `Authorization` header, when set.
    pub auth_header: Option<String>,
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
}

impl RelayConfig {
    pub fn from_env() -> Option<Self> {
        let url = std::env::var("TRIAD_ERP_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        Some(RelayConfig {
            url,
            auth_header: std::env::var("TRIAD_ERP_AUTH").ok(),
            max_attempts: 8,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        })
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_backoff
            .saturating_mul(1u32 << attempt.clamp(1, 16).saturating_sub(1))
            .min(self.max_backoff);
        Duration::from_millis(
            rand::thread_rng()
                .gen_range(0..=ceiling.as_millis() as u64)
                .max(1),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Projection(#[from] triad_projections::ProjectionError),
    #[error("http: {0}")]
    Http(String),
}

/// The integration event for a source event, or `None` if the ERP does not care about it.
/// Shape version 1 (schemas/integration/auction.v1.json).
pub async fn integration_event(
    store: &EventStore,
    e: &RecordedEvent,
) -> Result<Option<Value>, RelayError> {
    if e.aggregate_type != "Auction" || e.event_type != "AuctionClosed" {
        return Ok(None);
    }
    let Ok(AuctionEvent::AuctionClosed { outcome, closed_at }) = e.decode::<AuctionEvent>() else {
        return Ok(None);
    };
    // Title and seller were set when the auction opened, long before it closed.
    let view = triad_projections::auctions::get_auction(store.read_pool(), &e.aggregate_id).await?;
    let key = e
        .metadata()
        .map(|m| m.event_id)
        .unwrap_or_else(|| format!("position-{}", e.position));
    let base = json!({
        "schemaVersion": 1,
        "idempotencyKey": key,
        "sourcePosition": e.position,
        "occurredAt": closed_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "auctionId": e.aggregate_id,
        "title": view.as_ref().map(|v| v.title.clone()),
        "sellerId": view.as_ref().map(|v| v.seller_id.clone()),
    });
    let mut message = base;
    match outcome {
        CloseOutcome::Sold { winner, amount } => {
            message["type"] = json!("auction.sold");
            message["buyerId"] = json!(winner.to_string());
            message["amountCents"] = json!(amount.get());
        }
        CloseOutcome::Unsold { highest } => {
            message["type"] = json!("auction.unsold");
            message["highestBidCents"] = json!(highest.map(|h| h.get()));
        }
    }
    Ok(Some(message))
}

pub struct Relay {
    store: EventStore,
    config: RelayConfig,
    client: reqwest::Client,
}

impl Relay {
    pub async fn new(store: EventStore, config: RelayConfig) -> Result<Self, RelayError> {
        store.migrate(NAME, MIGRATIONS).await?;
        triad_projections::runner::register_checkpoint(store.read_pool(), NAME, 1).await?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| RelayError::Http(e.to_string()))?;
        Ok(Relay {
            store,
            config,
            client,
        })
    }

    async fn send(&self, message: &Value) -> Result<(), String> {
        let mut request = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header(
                "Idempotency-Key",
                message["idempotencyKey"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
            .body(message.to_string());
        if let Some(auth) = &self.config.auth_header {
            request = request.header("Authorization", auth);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("ERP answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Delivers with retries; Err(last error) after the last attempt.
    async fn deliver(&self, message: &Value) -> Result<(), String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send(message).await {
                Ok(()) => {
                    metrics::counter!("triad_relay_delivered_total").increment(1);
                    return Ok(());
                }
                Err(e) if attempt >= self.config.max_attempts => return Err(e),
                Err(_) => {
                    metrics::counter!("triad_relay_retries_total").increment(1);
                    tokio::time::sleep(self.config.backoff(attempt)).await;
                }
            }
        }
    }

    async fn blocked(&self, aggregate_id: &str) -> Result<bool, RelayError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM relay_dead_letters WHERE aggregate_id = $1")
                .bind(aggregate_id.to_string())
                .fetch_one(self.store.read_pool())
                .await?;
        Ok(n > 0)
    }

    async fn park(
        &self,
        e: &RecordedEvent,
        message: &Value,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), RelayError> {
        sqlx::query("INSERT INTO relay_dead_letters (key, aggregate_id, position, message, status, attempts, last_error) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key) DO NOTHING")
            .bind(message["idempotencyKey"].as_str().unwrap_or_default().to_string())
            .bind(e.aggregate_id.clone())
            .bind(e.position)
            .bind(message.to_string())
            .bind(status.to_string())
            .bind(if status == "dead" { self.config.max_attempts as i64 } else { 0 })
            .bind(error.map(str::to_string))
            .execute(self.store.read_pool())
            .await?;
        self.update_gauge().await;
        Ok(())
    }

    async fn update_gauge(&self) {
        if let Ok(n) = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM relay_dead_letters")
            .fetch_one(self.store.read_pool())
            .await
        {
            metrics::gauge!("triad_relay_dead_letters").set(n as f64);
        }
    }

    async fn checkpoint(&self) -> Result<i64, RelayError> {
        Ok(triad_projections::runner::checkpoint(self.store.read_pool(), NAME).await?)
    }

    async fn advance(&self, to: i64) -> Result<(), RelayError> {
        sqlx::query(
            "UPDATE projection_checkpoints SET position = $1 WHERE name = $2 AND position < $1",
        )
        .bind(to)
        .bind(NAME)
        .execute(self.store.read_pool())
        .await?;
        Ok(())
    }

    /// Relays until the process ends, as the leader only.
    pub async fn run(&self) -> Result<(), RelayError> {
        let _leadership = self.lead().await?;
        tracing::info!("relay is the leader");
        let from = self.checkpoint().await? + 1;
        let filter = LogFilter {
            aggregate_type: Some("Auction".into()),
            aggregate_id: None,
            event_types: vec!["AuctionClosed".into()],
        };
        use futures::{StreamExt, TryStreamExt};
        let mut log = self.store.subscribe(from, filter).ready_chunks(RELAY_CHUNK);
        while let Some(chunk) = log.next().await {
            // A read error ends the run (the caller restarts from the checkpoint); what came
            // before it in the chunk is delivered again then, which idempotency keys absorb.
            let events = chunk.into_iter().collect::<Result<Vec<_>, _>>()?;
            let Some(last) = events.last().map(|e| (e.position, e.recorded_at)) else {
                continue;
            };
            // Aggregates in flight together, each one's messages in log order: order per
            // aggregate holds, and one slow or failing auction does not hold up the others.
            let mut groups: Vec<(String, Vec<RecordedEvent>)> = Vec::new();
            for e in events {
                match groups.iter_mut().find(|(id, _)| *id == e.aggregate_id) {
                    Some((_, group)) => group.push(e),
                    None => groups.push((e.aggregate_id.clone(), vec![e])),
                }
            }
            futures::stream::iter(groups.into_iter().map(Ok))
                .try_for_each_concurrent(RELAY_IN_FLIGHT, |(_, group)| self.relay_in_order(group))
                .await?;
            let lag = (Utc::now() - last.1).num_milliseconds();
            metrics::gauge!("triad_relay_lag_ms").set(lag as f64);
            // Only once every message of the chunk was acknowledged or parked.
            self.advance(last.0).await?;
        }
        Ok(())
    }

    /// Delivers one aggregate's messages in order; after a dead letter, the rest are held.
    async fn relay_in_order(&self, group: Vec<RecordedEvent>) -> Result<(), RelayError> {
        let mut blocked = match group.first() {
            Some(e) => self.blocked(&e.aggregate_id).await?,
            None => return Ok(()),
        };
        for e in &group {
            let Some(message) = integration_event(&self.store, e).await? else {
                continue;
            };
            if blocked {
                // Order per aggregate: wait behind the dead letter.
                self.park(e, &message, "held", None).await?;
            } else if let Err(error) = self.deliver(&message).await {
                metrics::counter!("triad_relay_dead_lettered_total").increment(1);
                tracing::warn!(auction = %e.aggregate_id, error = %error, "relay message dead-lettered");
                self.park(e, &message, "dead", Some(&error)).await?;
                blocked = true;
            }
        }
        Ok(())
    }

    /// Waits until this process holds the leader lock (PostgreSQL); the returned connection
    /// keeps it for as long as it lives. SQLite stores have one process: always the leader.
    async fn lead(&self) -> Result<Option<sqlx::pool::PoolConnection<sqlx::Postgres>>, RelayError> {
        let Db::Postgres(pool) = self.store.db() else {
            return Ok(None);
        };
        let mut conn = pool.acquire().await?;
        loop {
            let got: bool = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                .bind(LEADER_LOCK)
                .fetch_one(&mut *conn)
                .await?;
            if got {
                // Not returned to the pool: dropping it closes the session and frees the lock.
                return Ok(Some(conn));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Dead letters and the messages held behind them, in order.
    pub async fn dead_letters(
        &self,
    ) -> Result<Vec<(String, String, i64, String, Option<String>)>, RelayError> {
        let rows = sqlx::query("SELECT key, aggregate_id, position, status, last_error FROM relay_dead_letters ORDER BY position").fetch_all(self.store.read_pool()).await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("key")?,
                    r.try_get("aggregate_id")?,
                    r.try_get("position")?,
                    r.try_get("status")?,
                    r.try_get("last_error")?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Delivers dead and held messages again, per aggregate in order; stops an aggregate at
    /// its first failure. Returns how many were delivered.
    pub async fn redrive(&self) -> Result<usize, RelayError> {
        let rows = sqlx::query(
            "SELECT key, aggregate_id, message FROM relay_dead_letters ORDER BY position",
        )
        .fetch_all(self.store.read_pool())
        .await?;
        let mut failed_aggregates = std::collections::HashSet::new();
        let mut delivered = 0;
        for r in rows {
            let (key, aggregate, message): (String, String, String) = (
                r.try_get("key")?,
                r.try_get("aggregate_id")?,
                r.try_get("message")?,
            );
            if failed_aggregates.contains(&aggregate) {
                continue;
            }
            let message: Value = serde_json::from_str(&message).unwrap_or(Value::Null);
            match self.deliver(&message).await {
                Ok(()) => {
                    sqlx::query("DELETE FROM relay_dead_letters WHERE key = $1")
                        .bind(&key)
                        .execute(self.store.read_pool())
                        .await?;
                    delivered += 1;
                }
                Err(error) => {
                    sqlx::query("UPDATE relay_dead_letters SET status = 'dead', last_error = $1 WHERE key = $2").bind(&error).bind(&key).execute(self.store.read_pool()).await?;
                    failed_aggregates.insert(aggregate);
                }
            }
        }
        self.update_gauge().await;
        Ok(delivered)
    }
}

/// Prepares the relay (its tables) and runs it in the background, restarting it after
/// failures; it resumes from its checkpoint, so nothing is lost or sent out of order.
pub async fn start(
    store: EventStore,
    config: RelayConfig,
) -> Result<tokio::task::JoinHandle<()>, RelayError> {
    let relay = Relay::new(store, config).await?;
    Ok(tokio::spawn(async move {
        loop {
            if let Err(e) = relay.run().await {
                tracing::warn!(error = %e, "relay stopped; restarting");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }))
}
