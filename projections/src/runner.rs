//! [`ProjectionRunner`]: one task per projection, each with its own checkpoint.

use futures::StreamExt;
use sqlx::{Any, AnyPool, Transaction};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use triad_eventstore::store::Migration;
use triad_eventstore::{EventStore, Position, RecordedEvent, StoreError};

/// Events applied per transaction at most (bounded so a long catch-up still commits often).
const BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// A read model fed from the log.
#[async_trait::async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the checkpoint's key.
    fn name(&self) -> &'static str;

    /// Tables this projection owns.
    fn migrations(&self) -> &'static [Migration];

    /// Bump when the projection's code changes what it writes: a stored version that differs
    /// makes `triad serve` rebuild it at start (and `triad rebuild --outdated` list it).
    fn version(&self) -> i64 {
        1
    }

    /// The tables a rebuild empties before replaying the log into them.
    fn tables(&self) -> &'static [&'static str];

    /// Whether replaying the log into this projection is free of side effects. Projections
    /// that feed the outside world (the notification outbox) are not: a rebuild refuses them.
    fn replayable(&self) -> bool {
        true
    }

    /// Applies one event inside the batch's transaction. Events of no interest are ignored.
    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError>;

    /// Applies a run of consecutive events (in log order) inside one transaction. The default
    /// applies them one by one; a projection may fold the run in memory and write each row
    /// once, which is what makes rebuilds and catch-ups fast (they feed pages of thousands).
    /// Either way the rows must end as if `apply` had seen each event in turn.
    async fn apply_batch(
        &self,
        tx: &mut Transaction<'static, Any>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(tx, event).await?;
        }
        Ok(())
    }
}

const CHECKPOINT_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        postgres: "CREATE TABLE IF NOT EXISTS projection_checkpoints (name text PRIMARY KEY, position bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())",
        sqlite: "CREATE TABLE IF NOT EXISTS projection_checkpoints (name text PRIMARY KEY, position integer NOT NULL, updated_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
    },
    Migration {
        version: 2,
        postgres: "ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 1",
        sqlite: "ALTER TABLE projection_checkpoints ADD COLUMN version integer NOT NULL DEFAULT 1",
    },
];

pub(crate) async fn migrate_checkpoints(store: &EventStore) -> Result<(), ProjectionError> {
    store.migrate("projections", CHECKPOINT_MIGRATIONS).await?;
    Ok(())
}

/// The version a projection's rows were built with (1 for rows from before versions).
pub async fn stored_version(pool: &AnyPool, name: &str) -> Result<Option<i64>, ProjectionError> {
    Ok(
        sqlx::query_scalar("SELECT version FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn checkpoint(pool: &AnyPool, name: &str) -> Result<Position, ProjectionError> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    Ok(position.unwrap_or(0))
}

/// Moves the checkpoint from `expected` to `position`, first thing in the batch's
/// transaction. The row lock serializes runners of the same projection in several replicas,
/// and a runner whose `expected` is stale (another replica got there first) gets `false` and
/// must not apply anything: every event takes effect once, however many replicas run.
/// Process managers (alert engine, matcher) use it the same way, after their side effects.
pub async fn advance_checkpoint<'e, E: sqlx::Executor<'e, Database = Any>>(
    executor: E,
    name: &str,
    expected: Position,
    position: Position,
) -> Result<bool, ProjectionError> {
    let moved = sqlx::query(
        "UPDATE projection_checkpoints SET position = $1 WHERE name = $2 AND position = $3",
    )
    .bind(position)
    .bind(name)
    .bind(expected)
    .execute(executor)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// Creates a consumer's checkpoint row (at 0, with `version`) unless it exists.
pub async fn register_checkpoint(
    pool: &AnyPool,
    name: &str,
    version: i64,
) -> Result<(), ProjectionError> {
    sqlx::query("INSERT INTO projection_checkpoints (name, position, version) VALUES ($1, 0, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(version)
        .execute(pool)
        .await?;
    Ok(())
}

/// Runs projections in the background; dropping it stops them.
pub struct ProjectionRunner {
    progress: BTreeMap<&'static str, watch::Receiver<Position>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ProjectionRunner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl ProjectionRunner {
    /// Migrates every projection's tables and starts feeding each from its checkpoint.
    pub async fn start(
        store: EventStore,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Self, ProjectionError> {
        migrate_checkpoints(&store).await?;
        let mut progress = BTreeMap::new();
        let mut tasks = vec![];
        let mut outdated = vec![];
        for p in &projections {
            store.migrate(p.name(), p.migrations()).await?;
            register_checkpoint(store.read_pool(), p.name(), p.version()).await?;
            if stored_version(store.read_pool(), p.name()).await? != Some(p.version())
                && p.replayable()
            {
                tracing::info!(
                    projection = p.name(),
                    version = p.version(),
                    "projection code changed: rebuilding it from the log"
                );
                outdated.push(p.as_ref());
            }
        }
        // One pass over the log for all of them.
        crate::rebuild::rebuild_all(&store, &outdated, &|_, _| {}).await?;
        for p in projections {
            let from = checkpoint(store.read_pool(), p.name()).await?;
            let (tx, rx) = watch::channel(from);
            progress.insert(p.name(), rx);
            tasks.push(tokio::spawn(run(store.clone(), p, tx)));
        }
        Ok(ProjectionRunner { progress, tasks })
    }

    /// Each projection's checkpoint as last committed.
    pub fn positions(&self) -> BTreeMap<&'static str, Position> {
        self.progress
            .iter()
            .map(|(name, rx)| (*name, *rx.borrow()))
            .collect()
    }

    /// Waits until every projection has committed `position` (or `timeout` passes).
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        let all = self
            .progress
            .values()
            .cloned()
            .map(|mut rx| async move { rx.wait_for(|p| *p >= position).await.is_ok() });
        tokio::time::timeout(timeout, futures::future::join_all(all))
            .await
            .map(|done| done.into_iter().all(|ok| ok))
            .unwrap_or(false)
    }
}

async fn run(
    store: EventStore,
    projection: Arc<dyn Projection>,
    progress: watch::Sender<Position>,
) {
    let name = projection.name();
    loop {
        let from = *progress.borrow() + 1;
        let mut log = store.subscribe_all(from).ready_chunks(BATCH);
        while let Some(chunk) = log.next().await {
            let expected = *progress.borrow();
            match apply_batch(&store, projection.as_ref(), expected, chunk).await {
                Ok(Batch::Applied(position)) => {
                    metrics::gauge!("triad_projection_position", "projection" => name)
                        .set(position as f64);
                    progress.send_replace(position);
                }
                Ok(Batch::Empty) => {}
                Ok(Batch::Overtaken) => {
                    // Another replica applied these events: continue from its checkpoint.
                    match checkpoint(store.read_pool(), name).await {
                        Ok(p) => {
                            progress.send_replace(p);
                        }
                        Err(e) => {
                            tracing::warn!(projection = name, error = %e, "cannot read checkpoint")
                        }
                    }
                    break;
                }
                Err(e) => {
                    metrics::counter!("triad_projection_errors_total", "projection" => name)
                        .increment(1);
                    tracing::error!(projection = name, error = %e, "projection batch failed; retrying from checkpoint");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

enum Batch {
    Applied(Position),
    Empty,
    Overtaken,
}

/// Applies a chunk of the log in one transaction with the checkpoint. A read error inside
/// the chunk applies what came before it.
async fn apply_batch(
    store: &EventStore,
    projection: &dyn Projection,
    expected: Position,
    chunk: Vec<Result<RecordedEvent, StoreError>>,
) -> Result<Batch, ProjectionError> {
    let mut events = Vec::with_capacity(chunk.len());
    for item in chunk {
        match item {
            Ok(e) => events.push(e),
            Err(e) => {
                // The log stream retries by itself after a pause.
                tracing::warn!(projection = projection.name(), error = %e, "log read failed");
                break;
            }
        }
    }
    let Some(last) = events.last().map(|e| e.position) else {
        return Ok(Batch::Empty);
    };
    let mut tx = store.read_pool().begin().await?;
    if !advance_checkpoint(&mut *tx, projection.name(), expected, last).await? {
        return Ok(Batch::Overtaken);
    }
    projection.apply_batch(&mut tx, &events).await?;
    tx.commit().await?;
    Ok(Batch::Applied(last))
}
