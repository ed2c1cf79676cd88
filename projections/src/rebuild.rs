//! Rebuilding a projection from the log without taking anything down.
//!
//! The whole rebuild is one transaction: it locks the projection's checkpoint row (the live
//! runners of that projection, in this process or any replica, wait on it), empties the
//! projection's tables, replays the log up to the head into them, and moves the checkpoint and
//! version. Until it commits, every reader keeps seeing the old rows (MVCC on PostgreSQL, the
//! WAL snapshot on SQLite); the commit swaps in the new version atomically and the old rows are
//! gone with it. Events appended meanwhile are picked up by the live runners right after, from
//! the new checkpoint. On SQLite the transaction holds the single write lock, so appends wait
//! for the rebuild (SQLite is the one-node store); on PostgreSQL only this projection waits.
//!
//! Side effects never re-fire: a projection that is not `replayable` is refused.

use crate::runner::{Projection, ProjectionError};
use triad_eventstore::{EventStore, Position};

const PAGE: i64 = 5_000;

/// Rebuilds `projection`; `progress(done, total)` is called after every page.
/// Returns the position it was rebuilt to.
pub async fn rebuild(
    store: &EventStore,
    projection: &dyn Projection,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Position, ProjectionError> {
    if !projection.replayable() {
        return Err(ProjectionError::Invalid(format!(
            "{} has side effects outside its tables and cannot be rebuilt",
            projection.name()
        )));
    }
    crate::runner::migrate_checkpoints(store).await?;
    store
        .migrate(projection.name(), projection.migrations())
        .await?;
    let pool = store.read_pool();
    let mut tx = if store.is_postgres() {
        pool.begin().await?
    } else {
        pool.begin_with("BEGIN IMMEDIATE").await?
    };
    // Take the checkpoint row first: live runners of this projection wait from here on.
    sqlx::query("INSERT INTO projection_checkpoints (name, position, version) VALUES ($1, 0, $2) ON CONFLICT (name) DO UPDATE SET position = projection_checkpoints.position")
        .bind(projection.name())
        .bind(projection.version())
        .execute(&mut *tx)
        .await?;
    let head = store.head().await?;
    for table in projection.tables() {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *tx)
            .await?;
    }
    let mut next = 1;
    let mut done = 0u64;
    progress(0, head as u64);
    while next <= head {
        let page = store.read(next, PAGE, &Default::default()).await?;
        if page.is_empty() {
            break;
        }
        for e in page.iter().filter(|e| e.position <= head) {
            projection.apply(&mut tx, e).await?;
            done += 1;
        }
        next = page[page.len() - 1].position + 1;
        progress(done.min(head as u64), head as u64);
    }
    sqlx::query("UPDATE projection_checkpoints SET position = $1, version = $2 WHERE name = $3")
        .bind(head)
        .bind(projection.version())
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    metrics::counter!("triad_projection_rebuilds_total", "projection" => projection.name())
        .increment(1);
    Ok(head)
}
