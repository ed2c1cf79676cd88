//! The access log: one append-only, hash-chained record per read of a subject's data.
//!
//! Each record's hash covers the previous record's hash and its own content, so removing,
//! reordering or editing a record breaks the chain at that point ([`AccessLog::verify`]).
//! Appends are serialized (an advisory lock on PostgreSQL, the write lock on SQLite) so the
//! chain has one order; on PostgreSQL a trigger also refuses UPDATE and DELETE.

use crate::db::Db;
use crate::error::StoreError;
use crate::schema::{self, Migration};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    postgres: r#"
CREATE TABLE IF NOT EXISTS access_log (
    seq bigint PRIMARY KEY,
    at text NOT NULL,
    actor_sub text NOT NULL,
    actor_role text NOT NULL,
    subject_id text NOT NULL,
    fields text NOT NULL,
    outcome text NOT NULL,
    operation text NOT NULL,
    request_id text NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL
);
CREATE INDEX IF NOT EXISTS access_log_subject_idx ON access_log (subject_id, seq);
CREATE OR REPLACE FUNCTION triad_access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'access_log is append-only';
END
$fn$;
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'access_log_append_only') THEN
        CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE ON access_log
            FOR EACH ROW EXECUTE FUNCTION triad_access_log_append_only();
    END IF;
END
$do$;
"#,
    sqlite: r#"
CREATE TABLE IF NOT EXISTS access_log (
    seq integer PRIMARY KEY,
    at text NOT NULL,
    actor_sub text NOT NULL,
    actor_role text NOT NULL,
    subject_id text NOT NULL,
    fields text NOT NULL,
    outcome text NOT NULL,
    operation text NOT NULL,
    request_id text NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL
);
CREATE INDEX IF NOT EXISTS access_log_subject_idx ON access_log (subject_id, seq);
CREATE TRIGGER IF NOT EXISTS access_log_no_update BEFORE UPDATE ON access_log BEGIN SELECT RAISE(ABORT, 'access_log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS access_log_no_delete BEFORE DELETE ON access_log BEGIN SELECT RAISE(ABORT, 'access_log is append-only'); END;
"#,
}];

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One read of one subject's data (allowed or denied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    pub at: String,
    pub actor_sub: String,
    pub actor_role: String,
    pub subject_id: String,
    /// The fields read (or asked for, when denied).
    pub fields: Vec<String>,
    /// `allowed` or `denied`.
    pub outcome: String,
    /// `query`, `subscription` or `subscription-event`.
    pub operation: String,
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccess {
    pub seq: i64,
    pub record: AccessRecord,
    pub prev_hash: String,
    pub hash: String,
}

fn chain_hash(prev: &str, r: &AccessRecord) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    // serde_json keeps struct field order, so this encoding is stable.
    h.update(serde_json::to_vec(r).unwrap_or_default());
    hex::encode(h.finalize())
}

#[derive(Clone, Debug)]
pub struct AccessLog {
    db: Db,
}

impl AccessLog {
    pub(crate) async fn open(db: Db) -> Result<Self, StoreError> {
        schema::migrate(&db, "access_log", MIGRATIONS).await?;
        Ok(AccessLog { db })
    }

    pub async fn append(&self, record: &AccessRecord) -> Result<i64, StoreError> {
        let fields = serde_json::to_string(&record.fields)?;
        const LAST: &str = "SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1";
        const INSERT: &str = "INSERT INTO access_log (seq, at, actor_sub, actor_role, subject_id, fields, outcome, operation, request_id, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
        macro_rules! append_with {
            ($tx:expr) => {{
                let last = sqlx::query(LAST).fetch_optional(&mut *$tx).await?;
                let (prev_seq, prev_hash): (i64, String) = match last {
                    Some(r) => (r.try_get("seq")?, r.try_get("hash")?),
                    None => (0, GENESIS.to_string()),
                };
                let seq = prev_seq + 1;
                let hash = chain_hash(&prev_hash, record);
                sqlx::query(INSERT)
                    .bind(seq)
                    .bind(&record.at)
                    .bind(&record.actor_sub)
                    .bind(&record.actor_role)
                    .bind(&record.subject_id)
                    .bind(&fields)
                    .bind(&record.outcome)
                    .bind(&record.operation)
                    .bind(&record.request_id)
                    .bind(&prev_hash)
                    .bind(&hash)
                    .execute(&mut *$tx)
                    .await?;
                seq
            }};
        }
        let seq = match &self.db {
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7305071245)")
                    .execute(&mut *tx)
                    .await?;
                let seq = append_with!(tx);
                tx.commit().await?;
                seq
            }
            Db::Sqlite(p) => {
                // IMMEDIATE: take the write lock before reading the chain's tail.
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let seq = append_with!(tx);
                tx.commit().await?;
                seq
            }
        };
        metrics::counter!("triad_access_records_total", "outcome" => record.outcome.clone())
            .increment(1);
        Ok(seq)
    }

    /// Records about `subject` (all when `None`) with `seq > after`, oldest first.
    pub async fn list(
        &self,
        subject: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredAccess>, StoreError> {
        let (sql, subject) = match subject {
            Some(s) => (
                "SELECT * FROM access_log WHERE subject_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                s,
            ),
            None => (
                "SELECT * FROM access_log WHERE $1 = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                "",
            ),
        };
        macro_rules! rows {
            ($pool:expr) => {{
                let rows = sqlx::query(sql)
                    .bind(subject)
                    .bind(after)
                    .bind(limit)
                    .fetch_all($pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let fields: String = r.try_get("fields")?;
                        Ok(StoredAccess {
                            seq: r.try_get("seq")?,
                            prev_hash: r.try_get("prev_hash")?,
                            hash: r.try_get("hash")?,
                            record: AccessRecord {
                                at: r.try_get("at")?,
                                actor_sub: r.try_get("actor_sub")?,
                                actor_role: r.try_get("actor_role")?,
                                subject_id: r.try_get("subject_id")?,
                                fields: serde_json::from_str(&fields).unwrap_or_default(),
                                outcome: r.try_get("outcome")?,
                                operation: r.try_get("operation")?,
                                request_id: r.try_get("request_id")?,
                            },
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()?
            }};
        }
        Ok(match &self.db {
            Db::Postgres(p) => rows!(p),
            Db::Sqlite(p) => rows!(p),
        })
    }

    /// Walks the whole chain; the first broken link is reported as (seq, what).
    pub async fn verify(&self) -> Result<Result<i64, (i64, String)>, StoreError> {
        let mut prev = GENESIS.to_string();
        let mut expected_seq = 1;
        let mut after = 0;
        loop {
            let page = self.list(None, after, 1_000).await?;
            for s in &page {
                if s.seq != expected_seq {
                    return Ok(Err((
                        s.seq,
                        format!("sequence gap: expected {expected_seq}"),
                    )));
                }
                if s.prev_hash != prev {
                    return Ok(Err((s.seq, "previous hash does not match".into())));
                }
                if chain_hash(&prev, &s.record) != s.hash {
                    return Ok(Err((
                        s.seq,
                        "record does not match its hash (edited)".into(),
                    )));
                }
                prev = s.hash.clone();
                expected_seq += 1;
            }
            match page.last() {
                Some(last) if page.len() == 1_000 => after = last.seq,
                _ => return Ok(Ok(expected_seq - 1)),
            }
        }
    }
}
