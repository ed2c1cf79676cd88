//! Rebuilding projections from the log without taking anything down.
//!
//! A rebuild is one transaction: it locks the checkpoint rows of the projections being rebuilt
//! (their live runners, in this process or any replica, wait on them), empties their tables,
//! replays the log up to the head into them, and moves the checkpoints and versions. Until it
//! commits, every reader keeps seeing the old rows (MVCC on PostgreSQL, the WAL snapshot on
//! SQLite); the commit swaps in the new version atomically and the old rows are gone with it.
//! Events appended meanwhile are picked up by the live runners right after, from the new
//! checkpoints. On SQLite the transaction holds the single write lock, so appends wait for the
//! rebuild (SQLite is the one-node store); on PostgreSQL only these projections wait.
//!
//! Several projections are rebuilt in one pass over the log: each page is read once (the next
//! page is read while this one is applied) and handed to every projection's `apply_batch`.
//!
//! Side effects never re-fire: a projection that is not `replayable` is refused.

use crate::runner::{Projection, ProjectionError};
use triad_eventstore::{EventStore, Position, RecordedEvent, StoreError};

/// Events read and applied per step: large enough that per-statement costs vanish when a
/// projection folds the page, small enough to keep memory flat.
const PAGE: i64 = 10_000;

/// Rebuilds one projection; see [`rebuild_all`].
pub async fn rebuild(
    store: &EventStore,
    projection: &dyn Projection,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Position, ProjectionError> {
    rebuild_all(store, &[projection], progress).await
}

/// Rebuilds `projections` together in one pass over the log; `progress(done, total)` is called
/// after every page. Returns the position they were rebuilt to.
pub async fn rebuild_all(
    store: &EventStore,
    projections: &[&dyn Projection],
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Position, ProjectionError> {
    if let Some(p) = projections.iter().find(|p| !p.replayable()) {
        return Err(ProjectionError::Invalid(format!(
            "{} has side effects outside its tables and cannot be rebuilt",
            p.name()
        )));
    }
    // One lock order for everyone (by name), so two rebuilds of overlapping sets cannot deadlock.
    let mut chosen: Vec<&dyn Projection> = projections.to_vec();
    chosen.sort_by_key(|p| p.name());
    chosen.dedup_by_key(|p| p.name());
    if chosen.is_empty() {
        return store.head().await.map_err(Into::into);
    }
    crate::runner::migrate_checkpoints(store).await?;
    for p in &chosen {
        store.migrate(p.name(), p.migrations()).await?;
    }
    let pool = store.read_pool();
    let mut tx = if store.is_postgres() {
        pool.begin().await?
    } else {
        pool.begin_with("BEGIN IMMEDIATE").await?
    };
    // Take the checkpoint rows first: live runners of these projections wait from here on.
    for p in &chosen {
        sqlx::query("INSERT INTO projection_checkpoints (name, position, version) VALUES ($1, 0, $2) ON CONFLICT (name) DO UPDATE SET position = projection_checkpoints.position")
            .bind(p.name())
            .bind(p.version())
            .execute(&mut *tx)
            .await?;
    }
    let head = store.head().await?;
    for p in &chosen {
        for table in p.tables() {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await?;
        }
    }
    let mut done = 0u64;
    progress(0, head as u64);
    let mut pending = (head >= 1).then(|| read_ahead(store, 1));
    while let Some(reading) = pending.take() {
        let mut page = reading
            .await
            .map_err(|e| ProjectionError::Invalid(format!("log reader stopped: {e}")))??;
        page.retain(|e| e.position <= head);
        let Some(last) = page.last().map(|e| e.position) else {
            break;
        };
        if last < head {
            pending = Some(read_ahead(store, last + 1));
        }
        for p in &chosen {
            p.apply_batch(&mut tx, &page).await?;
        }
        done += page.len() as u64;
        progress(done.min(head as u64), head as u64);
    }
    for p in &chosen {
        sqlx::query(
            "UPDATE projection_checkpoints SET position = $1, version = $2 WHERE name = $3",
        )
        .bind(head)
        .bind(p.version())
        .bind(p.name())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    for p in &chosen {
        metrics::counter!("triad_projection_rebuilds_total", "projection" => p.name()).increment(1);
    }
    Ok(head)
}

/// Reads the page from `from` on a task of its own, so decoding overlaps applying.
fn read_ahead(
    store: &EventStore,
    from: Position,
) -> tokio::task::JoinHandle<Result<Vec<RecordedEvent>, StoreError>> {
    let store = store.clone();
    tokio::spawn(async move { store.read(from, PAGE, &Default::default()).await })
}
