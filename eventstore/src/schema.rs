//! The store's own schema, created and migrated idempotently at start.
//!
//! Global ordering on PostgreSQL: a plain bigserial is assigned at INSERT, so a transaction that
//! took position 5 can commit after one that took 6, and a reader that saw 6 would skip 5.
//! Instead, positions are assigned by a deferred constraint trigger that runs at COMMIT, under a
//! transaction-scoped advisory lock. PostgreSQL releases locks only after the commit is visible,
//! so the next transaction's positions are drawn after the previous one's rows became visible:
//! position order is commit order and a reader's snapshot always holds a gap-free prefix.
//! The lock covers only the commit tail (one UPDATE per event plus the WAL flush), not the
//! transaction, so concurrent writers still overlap everything else.
//!
//! On SQLite writers are serialized by the database, and an AFTER INSERT trigger numbers rows
//! inside the writing transaction.

use crate::db::Db;
use crate::error::StoreError;

/// One step of a component's schema; versions are applied in order, once.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub postgres: &'static str,
    pub sqlite: &'static str,
}

pub(crate) const EVENT_STORE_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        postgres: r#"
CREATE TABLE IF NOT EXISTS events (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL CHECK (sequence >= 0),
    event_type     text   NOT NULL,
    event_version  text   NOT NULL,
    payload        jsonb  NOT NULL,
    metadata       jsonb  NOT NULL,
    position       bigint,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_position_idx ON events (position);
CREATE SEQUENCE IF NOT EXISTS events_position_seq AS bigint;

CREATE OR REPLACE FUNCTION triad_assign_position() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    -- Held until the end of COMMIT: serializes position assignment in commit order.
    PERFORM pg_advisory_xact_lock(7305071243);
    UPDATE events
       SET position = nextval('events_position_seq'), recorded_at = clock_timestamp()
     WHERE aggregate_type = NEW.aggregate_type
       AND aggregate_id = NEW.aggregate_id
       AND sequence = NEW.sequence;
    PERFORM pg_notify('triad_events', '');
    RETURN NULL;
END
$fn$;

DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'events_assign_position') THEN
        CREATE CONSTRAINT TRIGGER events_assign_position
            AFTER INSERT ON events
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION triad_assign_position();
    END IF;
END
$do$;

CREATE TABLE IF NOT EXISTS snapshots (
    aggregate_type   text   NOT NULL,
    aggregate_id     text   NOT NULL,
    last_sequence    bigint NOT NULL CHECK (last_sequence >= 0),
    current_snapshot bigint NOT NULL CHECK (current_snapshot >= 0),
    payload          jsonb  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);
"#,
        sqlite: r#"
CREATE TABLE IF NOT EXISTS events (
    aggregate_type text    NOT NULL,
    aggregate_id   text    NOT NULL,
    sequence       integer NOT NULL CHECK (sequence >= 0),
    event_type     text    NOT NULL,
    event_version  text    NOT NULL,
    payload        text    NOT NULL,
    metadata       text    NOT NULL,
    position       integer,
    recorded_at    text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_position_idx ON events (position);
CREATE TRIGGER IF NOT EXISTS events_assign_position AFTER INSERT ON events FOR EACH ROW
BEGIN
    UPDATE events SET position = (SELECT coalesce(max(position), 0) + 1 FROM events)
     WHERE rowid = NEW.rowid;
END;

CREATE TABLE IF NOT EXISTS snapshots (
    aggregate_type   text    NOT NULL,
    aggregate_id     text    NOT NULL,
    last_sequence    integer NOT NULL CHECK (last_sequence >= 0),
    current_snapshot integer NOT NULL CHECK (current_snapshot >= 0),
    payload          text    NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);
"#,
    },
    Migration {
        version: 2,
        postgres: r#"
CREATE TABLE IF NOT EXISTS subject_keys (
    subject_id  text PRIMARY KEY,
    wrapped     bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    shredded_at timestamptz
);
"#,
        sqlite: r#"
CREATE TABLE IF NOT EXISTS subject_keys (
    subject_id  text PRIMARY KEY,
    wrapped     blob,
    created_at  text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    shredded_at text
);
"#,
    },
];

/// Applies the component's migrations that are not yet recorded, each in its own transaction.
/// Safe to run from many processes at once: PostgreSQL serializes them with an advisory lock,
/// SQLite with its write lock.
pub(crate) async fn migrate(
    db: &Db,
    component: &str,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    const LEDGER_PG: &str = "CREATE TABLE IF NOT EXISTS triad_migrations (component text NOT NULL, version bigint NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))";
    const LEDGER_SQLITE: &str = "CREATE TABLE IF NOT EXISTS triad_migrations (component text NOT NULL, version integer NOT NULL, applied_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), PRIMARY KEY (component, version))";
    let fail = |v: i64, e: sqlx::Error| StoreError::Migration(format!("{component} v{v}: {e}"));
    match db {
        Db::Postgres(pool) => {
            for m in migrations {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7305071244)")
                    .execute(&mut *tx)
                    .await?;
                sqlx::raw_sql(LEDGER_PG).execute(&mut *tx).await?;
                let done: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM triad_migrations WHERE component = $1 AND version = $2",
                )
                .bind(component)
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
                if done.is_some() {
                    continue;
                }
                sqlx::raw_sql(m.postgres)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| fail(m.version, e))?;
                sqlx::query("INSERT INTO triad_migrations (component, version) VALUES ($1, $2)")
                    .bind(component)
                    .bind(m.version)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Db::Sqlite(pool) => {
            for m in migrations {
                // IMMEDIATE: take the write lock (waiting for it) before reading the ledger;
                // a deferred transaction could not upgrade if another writer came first.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::raw_sql(LEDGER_SQLITE).execute(&mut *tx).await?;
                let done: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM triad_migrations WHERE component = $1 AND version = $2",
                )
                .bind(component)
                .bind(m.version)
                .fetch_optional(&mut *tx)
                .await?;
                if done.is_some() {
                    continue;
                }
                sqlx::raw_sql(m.sqlite)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| fail(m.version, e))?;
                sqlx::query("INSERT INTO triad_migrations (component, version) VALUES ($1, $2)")
                    .bind(component)
                    .bind(m.version)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
    }
    Ok(())
}
