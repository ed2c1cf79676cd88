//! The hash chain over the log: each event's hash covers the previous event's hash and its
//! own stored content (position, aggregate, sequence, type, version, payload and metadata as
//! stored, so sealed personal data is covered without being readable). Removing, editing or
//! reordering a stored event breaks the chain from that point on; `verify.rs` finds it.
//!
//! Hashes are computed right after an event gets its position, by a chainer per process that
//! works through unhashed events in position order, taking turns with other processes (an
//! advisory lock on PostgreSQL, the write lock on SQLite).

use crate::db::Db;
use crate::error::StoreError;
use sha2::{Digest, Sha256};
use sqlx::Row;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const CHAINER_LOCK: i64 = 7305071246;
const BATCH: i64 = 2_000;

/// One stored event as the chain sees it (texts exactly as stored).
#[derive(Debug, Clone)]
pub struct Link {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
    pub hash: Option<String>,
}

pub fn link_hash(previous: &str, l: &Link) -> String {
    let mut h = Sha256::new();
    for part in [
        previous,
        &l.position.to_string(),
        &l.aggregate_type,
        &l.aggregate_id,
        &l.sequence.to_string(),
        &l.event_type,
        &l.event_version,
        &l.payload,
        &l.metadata,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

const SELECT: &str = "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, CAST(payload AS TEXT) AS payload, CAST(metadata AS TEXT) AS metadata, hash FROM events";

macro_rules! read_links {
    ($rows:expr) => {
        $rows
            .iter()
            .map(|r| {
                Ok(Link {
                    position: r.try_get("position")?,
                    aggregate_type: r.try_get("aggregate_type")?,
                    aggregate_id: r.try_get("aggregate_id")?,
                    sequence: r.try_get("sequence")?,
                    event_type: r.try_get("event_type")?,
                    event_version: r.try_get("event_version")?,
                    payload: r.try_get("payload")?,
                    metadata: r.try_get("metadata")?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect::<Result<Vec<Link>, sqlx::Error>>()
    };
}

/// Stored events with `position > after`, in order, at most `limit`.
pub async fn links(db: &Db, after: i64, limit: i64) -> Result<Vec<Link>, StoreError> {
    let sql = format!("{SELECT} WHERE position > $1 ORDER BY position LIMIT $2");
    Ok(match db {
        Db::Postgres(p) => read_links!(
            sqlx::query(&sql)
                .bind(after)
                .bind(limit)
                .fetch_all(p)
                .await?
        )?,
        Db::Sqlite(p) => read_links!(
            sqlx::query(&sql)
                .bind(after)
                .bind(limit)
                .fetch_all(p)
                .await?
        )?,
    })
}

/// Hashes the next unhashed events; returns how many. Safe to run from many processes.
pub async fn extend(db: &Db) -> Result<u64, StoreError> {
    const LAST: &str =
        "SELECT position, hash FROM events WHERE hash IS NOT NULL ORDER BY position DESC LIMIT 1";
    macro_rules! run {
        ($tx:expr) => {{
            let last = sqlx::query(LAST).fetch_optional(&mut *$tx).await?;
            let (mut previous_position, mut previous): (i64, String) = match last {
                Some(r) => (r.try_get("position")?, r.try_get("hash")?),
                None => (0, GENESIS.to_string()),
            };
            let sql = format!("{SELECT} WHERE position > $1 ORDER BY position LIMIT $2");
            let rows = sqlx::query(&sql)
                .bind(previous_position)
                .bind(BATCH)
                .fetch_all(&mut *$tx)
                .await?;
            let batch = read_links!(rows)?;
            let mut done = 0u64;
            for l in batch {
                // Only a gap-free run is chained: the next position must follow the last.
                if l.position != previous_position + 1 {
                    break;
                }
                let hash = link_hash(&previous, &l);
                sqlx::query("UPDATE events SET hash = $1 WHERE position = $2")
                    .bind(&hash)
                    .bind(l.position)
                    .execute(&mut *$tx)
                    .await?;
                previous = hash;
                previous_position = l.position;
                done += 1;
            }
            done
        }};
    }
    let done = match db {
        Db::Postgres(p) => {
            let mut tx = p.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CHAINER_LOCK)
                .execute(&mut *tx)
                .await?;
            let n = run!(tx);
            tx.commit().await?;
            n
        }
        Db::Sqlite(p) => {
            let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
            let n = run!(tx);
            tx.commit().await?;
            n
        }
    };
    Ok(done)
}
