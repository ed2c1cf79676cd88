//! [`EventStore`]: connection, schema, and the global log (read and subscribe).

use crate::crypto::{self, Keyring, MasterKey, Protection};
use crate::db::{self, Db};
use crate::error::StoreError;
use crate::record::{Position, RecordedEvent};
pub use crate::schema::Migration;
use crate::schema::{self, EVENT_STORE_MIGRATIONS};
use crate::upcast::Upcasters;
use crate::url::StoreUrl;
use chrono::{DateTime, Utc};
use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use cqrs_es::Aggregate;
use futures::stream::{self, BoxStream, StreamExt};
use postgres_es::PostgresEventRepository;
use sqlite_es::SqliteEventRepository;
use sqlx::{AnyPool, Row};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Rows per page when reading the log.
const PAGE: i64 = 1_000;
/// A tail re-reads the log at least this often even without a wake-up (a lost NOTIFY, another
/// process appending to SQLite).
const IDLE_POLL: Duration = Duration::from_millis(250);

/// Narrows a log read to one aggregate type, one aggregate, or some event types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub event_types: Vec<String>,
}

impl LogFilter {
    pub fn aggregate(aggregate_type: &str, aggregate_id: &str) -> Self {
        LogFilter {
            aggregate_type: Some(aggregate_type.into()),
            aggregate_id: Some(aggregate_id.into()),
            event_types: vec![],
        }
    }

    pub fn matches(&self, e: &RecordedEvent) -> bool {
        self.aggregate_type
            .as_ref()
            .is_none_or(|t| *t == e.aggregate_type)
            && self
                .aggregate_id
                .as_ref()
                .is_none_or(|i| *i == e.aggregate_id)
            && (self.event_types.is_empty() || self.event_types.contains(&e.event_type))
    }
}

enum Repo {
    Postgres(PostgresEventRepository),
    Sqlite(SqliteEventRepository),
}

struct Inner {
    url: StoreUrl,
    db: Db,
    read_pool: AnyPool,
    repo: Repo,
    upcasters: Upcasters,
    protection: Protection,
    keyring: Keyring,
    access_log: crate::audit::AccessLog,
    /// Bumped whenever this process appends or PostgreSQL notifies an append elsewhere.
    appended: watch::Sender<u64>,
    /// Bumped when this process appends to PostgreSQL: wakes its sequencer.
    unsequenced: watch::Sender<u64>,
    listener: Option<JoinHandle<()>>,
    sequencer: Option<JoinHandle<()>>,
    chainer: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in [
            self.listener.take(),
            self.sequencer.take(),
            self.chainer.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventStore({})", self.inner.url)
    }
}

/// How payloads are transformed on their way in and out.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub upcasters: Upcasters,
    pub protection: Protection,
    pub master_key: MasterKey,
}

impl StoreOptions {
    /// Every domain's personal-field declarations; the master key from TRIAD_MASTER_KEY.
    pub fn from_env() -> Result<Self, StoreError> {
        Ok(StoreOptions {
            upcasters: Upcasters::new(triad_domain::upcasters::all()),
            protection: Protection::new(triad_domain::patient::PROTECTED),
            master_key: MasterKey::from_env()?,
        })
    }
}

impl EventStore {
    /// Connects with [`StoreOptions::from_env`], creates or migrates the schema, and starts
    /// listening for appends.
    pub async fn connect(url: &StoreUrl) -> Result<Self, StoreError> {
        Self::connect_with(url, StoreOptions::from_env()?).await
    }

    pub async fn connect_with(url: &StoreUrl, options: StoreOptions) -> Result<Self, StoreError> {
        let StoreOptions {
            upcasters,
            protection,
            master_key,
        } = options;
        let (db, read_pool) = db::connect(url).await?;
        schema::migrate(&db, "eventstore", EVENT_STORE_MIGRATIONS).await?;
        let (appended, _) = watch::channel(0u64);
        let (unsequenced, _) = watch::channel(0u64);
        let (repo, listener, sequencer) = match &db {
            Db::Postgres(pool) => (
                Repo::Postgres(PostgresEventRepository::new(pool.clone())),
                Some(spawn_pg_listener(pool.clone(), appended.clone())),
                Some(spawn_sequencer(
                    pool.clone(),
                    unsequenced.subscribe(),
                    appended.clone(),
                )),
            ),
            Db::Sqlite(pool) => (
                Repo::Sqlite(SqliteEventRepository::new(pool.clone())),
                None,
                None,
            ),
        };
        let chainer = Some(spawn_chainer(db.clone(), appended.subscribe()));
        let keyring = Keyring::new(db.clone(), &master_key);
        let access_log = crate::audit::AccessLog::open(db.clone()).await?;
        Ok(EventStore {
            inner: Arc::new(Inner {
                url: url.clone(),
                keyring,
                access_log,
                protection,
                db,
                read_pool,
                repo,
                upcasters,
                appended,
                unsequenced,
                listener,
                sequencer,
                chainer,
            }),
        })
    }

    pub fn url(&self) -> &StoreUrl {
        &self.inner.url
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.inner.db, Db::Postgres(_))
    }

    /// The pool read models use (same database, so a projection's checkpoint and its rows
    /// commit in one transaction). SQL through it must be portable between the backends.
    pub fn read_pool(&self) -> &AnyPool {
        &self.inner.read_pool
    }

    /// Applies a component's schema migrations (read models use this too).
    pub async fn migrate(
        &self,
        component: &str,
        migrations: &[Migration],
    ) -> Result<(), StoreError> {
        schema::migrate(&self.inner.db, component, migrations).await
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.inner.db {
            Db::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(drop)?,
            Db::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(drop)?,
        }
        Ok(())
    }

    /// Committed events still waiting for a position (always 0 on SQLite).
    pub async fn unsequenced(&self) -> Result<i64, StoreError> {
        Ok(match &self.inner.db {
            Db::Postgres(p) => {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE position IS NULL")
                    .fetch_one(p)
                    .await?
            }
            Db::Sqlite(_) => 0,
        })
    }

    /// The highest position in the log (0 when empty).
    pub async fn head(&self) -> Result<Position, StoreError> {
        const SQL: &str = "SELECT coalesce(max(position), 0) FROM events";
        Ok(match &self.inner.db {
            Db::Postgres(p) => sqlx::query_scalar::<_, i64>(SQL).fetch_one(p).await?,
            Db::Sqlite(p) => sqlx::query_scalar::<_, i64>(SQL).fetch_one(p).await?,
        })
    }

    /// Events at positions `>= from`, in position order, at most `limit`.
    pub async fn read_all(
        &self,
        from: Position,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read(from, limit, &LogFilter::default()).await
    }

    /// Like [`Self::read_all`], narrowed by `filter`.
    pub async fn read(
        &self,
        from: Position,
        limit: i64,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // Only the filters in use reach the SQL, so each shape gets its own plan (a generic
        // "$2 IS NULL OR ..." plan would scan the whole log for one aggregate).
        let mut sql = String::from(
            "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata, recorded_at FROM events WHERE position >= $1",
        );
        let mut binds: Vec<&str> = vec![];
        if let Some(t) = &filter.aggregate_type {
            binds.push(t);
            sql.push_str(&format!(" AND aggregate_type = ${}", binds.len() + 1));
        }
        if let Some(id) = &filter.aggregate_id {
            binds.push(id);
            sql.push_str(&format!(" AND aggregate_id = ${}", binds.len() + 1));
        }
        if !filter.event_types.is_empty() {
            let mut marks = vec![];
            for t in &filter.event_types {
                binds.push(t);
                marks.push(format!("${}", binds.len() + 1));
            }
            sql.push_str(&format!(" AND event_type IN ({})", marks.join(", ")));
        }
        sql.push_str(&format!(" ORDER BY position LIMIT ${}", binds.len() + 2));
        macro_rules! bound {
            () => {{
                let mut q = sqlx::query(&sql).bind(from);
                for b in &binds {
                    q = q.bind(*b);
                }
                q.bind(limit)
            }};
        }
        let rows = match &self.inner.db {
            Db::Postgres(p) => {
                let rows = bound!().fetch_all(p).await?;
                rows.iter()
                    .map(|r| {
                        Ok(RawRow {
                            position: r.try_get("position")?,
                            aggregate_type: r.try_get("aggregate_type")?,
                            aggregate_id: r.try_get("aggregate_id")?,
                            sequence: r.try_get("sequence")?,
                            event_type: r.try_get("event_type")?,
                            event_version: r.try_get("event_version")?,
                            payload: r.try_get("payload")?,
                            metadata: r.try_get("metadata")?,
                            recorded_at: r.try_get("recorded_at")?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()?
            }
            Db::Sqlite(p) => {
                let rows = bound!().fetch_all(p).await?;
                rows.iter()
                    .map(|r| {
                        let payload: String = r.try_get("payload")?;
                        let metadata: String = r.try_get("metadata")?;
                        Ok(RawRow {
                            position: r.try_get("position")?,
                            aggregate_type: r.try_get("aggregate_type")?,
                            aggregate_id: r.try_get("aggregate_id")?,
                            sequence: r.try_get("sequence")?,
                            event_type: r.try_get("event_type")?,
                            event_version: r.try_get("event_version")?,
                            payload: serde_json::from_str(&payload)
                                .unwrap_or(serde_json::Value::Null),
                            metadata: serde_json::from_str(&metadata)
                                .unwrap_or(serde_json::Value::Null),
                            recorded_at: r.try_get("recorded_at")?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.to_recorded(row).await?);
        }
        Ok(out)
    }

    /// Decrypts personal fields (or marks them shredded); `true` when shredded.
    async fn open_personal(&self, e: &mut SerializedEvent) -> Result<bool, StoreError> {
        let Some((subject, pointers)) =
            self.inner
                .protection
                .lookup(&e.aggregate_type, &e.aggregate_id, &e.event_type)
        else {
            return Ok(false);
        };
        let subject = subject.to_string();
        let pointers: Vec<&str> = pointers.to_vec();
        let key = self.inner.keyring.for_read(&subject).await?;
        crypto::open(&mut e.payload, &pointers, key.as_deref(), &subject)
    }

    /// The append-only log of reads of personal data.
    pub fn access_log(&self) -> &crate::audit::AccessLog {
        &self.inner.access_log
    }

    /// Destroys a subject's data key: its personal fields become unreadable everywhere.
    pub async fn shred(&self, subject: &str) -> Result<(), StoreError> {
        self.inner.keyring.shred(subject).await
    }

    async fn to_recorded(&self, row: RawRow) -> Result<RecordedEvent, StoreError> {
        let serialized = SerializedEvent::new(
            row.aggregate_id,
            row.sequence as usize,
            row.aggregate_type,
            row.event_type,
            row.event_version,
            row.payload,
            row.metadata,
        );
        let mut e = self.inner.upcasters.upcast(serialized);
        let shredded = self.open_personal(&mut e).await?;
        Ok(RecordedEvent {
            position: row.position,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence as i64,
            event_type: e.event_type,
            event_version: e.event_version,
            payload: e.payload,
            metadata: e.metadata,
            recorded_at: row.recorded_at,
            shredded,
        })
    }

    /// The log from `from` on: everything already stored, then each new event as it commits.
    /// Never ends; a read error is yielded and the stream retries after a pause.
    pub fn subscribe_all(
        &self,
        from: Position,
    ) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        self.subscribe(from, LogFilter::default())
    }

    /// [`Self::subscribe_all`] narrowed by `filter`.
    pub fn subscribe(
        &self,
        from: Position,
        filter: LogFilter,
    ) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        struct State {
            store: EventStore,
            next: Position,
            wake: watch::Receiver<u64>,
            buffer: VecDeque<RecordedEvent>,
            filter: LogFilter,
        }
        let state = State {
            store: self.clone(),
            next: from.max(1),
            wake: self.inner.appended.subscribe(),
            buffer: VecDeque::new(),
            filter,
        };
        stream::unfold(state, |mut s| async move {
            loop {
                if let Some(event) = s.buffer.pop_front() {
                    return Some((Ok(event), s));
                }
                // Mark the current wake-up as seen *before* reading, so an append that lands
                // during the read still wakes the next wait.
                s.wake.borrow_and_update();
                match s.store.read(s.next, PAGE, &s.filter).await {
                    Ok(events) if !events.is_empty() => {
                        s.next = events[events.len() - 1].position + 1;
                        s.buffer.extend(events);
                    }
                    Ok(_) => {
                        tokio::select! {
                            _ = s.wake.changed() => {}
                            _ = tokio::time::sleep(IDLE_POLL) => {}
                        }
                    }
                    Err(e) => {
                        tokio::time::sleep(IDLE_POLL).await;
                        return Some((Err(e), s));
                    }
                }
            }
        })
        .boxed()
    }

    /// After an append: SQLite rows are numbered already, so wake the tails; PostgreSQL rows
    /// wait for the sequencer, which wakes the tails once it has numbered them.
    pub(crate) fn notify_appended(&self) {
        let signal = match self.inner.db {
            Db::Postgres(_) => &self.inner.unsequenced,
            Db::Sqlite(_) => &self.inner.appended,
        };
        signal.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// An aggregate's events after `after_sequence`, upcast.
    pub(crate) async fn load<A: Aggregate>(
        &self,
        aggregate_id: &str,
        after_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, StoreError> {
        let events = match &self.inner.repo {
            Repo::Postgres(r) if after_sequence == 0 => r.get_events::<A>(aggregate_id).await?,
            Repo::Postgres(r) => r.get_last_events::<A>(aggregate_id, after_sequence).await?,
            Repo::Sqlite(r) if after_sequence == 0 => r.get_events::<A>(aggregate_id).await?,
            Repo::Sqlite(r) => r.get_last_events::<A>(aggregate_id, after_sequence).await?,
        };
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let mut e = self.inner.upcasters.upcast(e);
            self.open_personal(&mut e).await?;
            out.push(e);
        }
        Ok(out)
    }

    /// Appends in one transaction; a sequence already taken is [`StoreError::Conflict`].
    pub(crate) async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
    ) -> Result<(), StoreError> {
        let mut sealed = events.to_vec();
        for e in &mut sealed {
            let found = self
                .inner
                .protection
                .lookup(&e.aggregate_type, &e.aggregate_id, &e.event_type)
                .map(|(subject, pointers)| (subject.to_string(), pointers.to_vec()));
            if let Some((subject, pointers)) = found {
                let key = self.inner.keyring.for_write(&subject).await?;
                crypto::seal(&mut e.payload, &pointers, &key, &subject)?;
            }
        }
        let events = &sealed;
        match &self.inner.repo {
            Repo::Postgres(r) => r.persist::<A>(events, None).await?,
            Repo::Sqlite(r) => r.persist::<A>(events, None).await?,
        }
        self.notify_appended();
        Ok(())
    }
}

struct RawRow {
    position: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: serde_json::Value,
    metadata: serde_json::Value,
    recorded_at: DateTime<Utc>,
}

/// Extends the hash chain over newly positioned events, soon after they appear.
fn spawn_chainer(db: Db, mut wake: watch::Receiver<u64>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = wake.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            wake.borrow_and_update();
            loop {
                match crate::chain::extend(&db).await {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "hash chain extension failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                }
            }
        }
    })
}

/// Rows numbered per sequencer statement at most.
const SEQUENCE_BATCH: i64 = 10_000;
/// The sequencer also looks for unnumbered rows this often (rows of a process that died
/// between its append and its sequencing, or another process's sequencer being slow).
const SEQUENCER_POLL: Duration = Duration::from_millis(100);

/// Numbers this process's appends (and any left unnumbered) soon after they commit.
fn spawn_sequencer(
    pool: sqlx::PgPool,
    mut wake: watch::Receiver<u64>,
    appended: watch::Sender<u64>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = wake.changed() => {}
                _ = tokio::time::sleep(SEQUENCER_POLL) => {}
            }
            wake.borrow_and_update();
            loop {
                match sequence_batch(&pool).await {
                    Ok(0) => break,
                    Ok(n) => {
                        metrics::counter!("triad_events_sequenced_total").increment(n);
                        appended.send_modify(|c| *c = c.wrapping_add(1));
                        if (n as i64) < SEQUENCE_BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sequencer failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                }
            }
        }
    })
}

async fn sequence_batch(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(schema::SEQUENCER_LOCK)
        .execute(&mut *tx)
        .await?;
    let numbered = sqlx::query(schema::SEQUENCE_BATCH_PG)
        .bind(SEQUENCE_BATCH)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if numbered > 0 {
        // Wakes the tails of every other process (delivered at commit).
        sqlx::query("SELECT pg_notify('triad_events', '')")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(numbered)
}

/// Turns NOTIFYs from any process's commits into wake-ups for this process's tails.
fn spawn_pg_listener(pool: sqlx::PgPool, appended: watch::Sender<u64>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "event listener cannot connect; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen("triad_events").await {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            loop {
                match listener.recv().await {
                    Ok(_) => appended.send_modify(|n| *n = n.wrapping_add(1)),
                    Err(e) => {
                        tracing::warn!(error = %e, "event listener lost its connection");
                        // Wake tails: they re-read and so miss nothing while we reconnect.
                        appended.send_modify(|n| *n = n.wrapping_add(1));
                        break;
                    }
                }
            }
        }
    })
}
