//! Patient read models: `patient_view`, `patient_care_team`, `alert_rule_view`,
//! `alert_view`, and the vitals time series (`vitals` raw readings plus `vitals_minute`,
//! `vitals_hour` and `vitals_day` rollups, so a long range reads few rows).
//!
//! On PostgreSQL `vitals` is partitioned by month on the reading time, its primary key
//! (patient, kind, time) being the index queries use; partitions are created as readings for
//! a new month arrive. On SQLite it is one table with the same key.
//!
//! Erasure: on `PatientForgotten` every row of the patient is deleted from every table here.

use crate::runner::{Projection, ProjectionError};
use crate::sql::{values, ROWS_PER_STATEMENT};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use sqlx::{Any, AnyPool, Row, Transaction};
use std::collections::BTreeMap;
use triad_domain::patient::{AlertEvent, PatientEvent, VitalsEvent};
use triad_domain::personal::Personal;
use triad_eventstore::store::Migration;
use triad_eventstore::RecordedEvent;

const COMMON: &str = r#"
CREATE TABLE IF NOT EXISTS patient_view (
    patient_id text PRIMARY KEY,
    name text,
    date_of_birth text,
    enrolled_at text NOT NULL
);
CREATE TABLE IF NOT EXISTS patient_care_team (
    patient_id text NOT NULL,
    doctor_id text NOT NULL,
    PRIMARY KEY (patient_id, doctor_id)
);
CREATE INDEX IF NOT EXISTS patient_care_team_doctor_idx ON patient_care_team (doctor_id, patient_id);
CREATE TABLE IF NOT EXISTS alert_rule_view (
    patient_id text NOT NULL,
    rule_id text NOT NULL,
    kind text NOT NULL,
    comparator text NOT NULL,
    threshold double precision NOT NULL,
    for_secs bigint NOT NULL,
    defined_by text NOT NULL,
    PRIMARY KEY (patient_id, rule_id)
);
CREATE TABLE IF NOT EXISTS alert_view (
    alert_id text PRIMARY KEY,
    patient_id text NOT NULL,
    rule_id text NOT NULL,
    kind text NOT NULL,
    value double precision,
    raised_at text NOT NULL,
    resolved_at text,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_view_patient_idx ON alert_view (patient_id, position);
"#;

const ROLLUPS: &str = r#"
CREATE TABLE IF NOT EXISTS vitals_minute (patient_id text NOT NULL, kind text NOT NULL, bucket_ms bigint NOT NULL, min_value double precision NOT NULL, max_value double precision NOT NULL, sum_value double precision NOT NULL, count bigint NOT NULL, PRIMARY KEY (patient_id, kind, bucket_ms));
CREATE TABLE IF NOT EXISTS vitals_hour (patient_id text NOT NULL, kind text NOT NULL, bucket_ms bigint NOT NULL, min_value double precision NOT NULL, max_value double precision NOT NULL, sum_value double precision NOT NULL, count bigint NOT NULL, PRIMARY KEY (patient_id, kind, bucket_ms));
CREATE TABLE IF NOT EXISTS vitals_day (patient_id text NOT NULL, kind text NOT NULL, bucket_ms bigint NOT NULL, min_value double precision NOT NULL, max_value double precision NOT NULL, sum_value double precision NOT NULL, count bigint NOT NULL, PRIMARY KEY (patient_id, kind, bucket_ms));
"#;

static MIGRATIONS: std::sync::LazyLock<[Migration; 1]> = std::sync::LazyLock::new(|| {
    [Migration {
        version: 1,
        postgres: Box::leak(
            format!(
                "{COMMON}{ROLLUPS}
CREATE TABLE IF NOT EXISTS vitals (
    patient_id text NOT NULL,
    kind text NOT NULL,
    at_ms bigint NOT NULL,
    value double precision NOT NULL,
    PRIMARY KEY (patient_id, kind, at_ms)
) PARTITION BY RANGE (at_ms);
CREATE TABLE IF NOT EXISTS vitals_default PARTITION OF vitals DEFAULT;
"
            )
            .into_boxed_str(),
        ),
        sqlite: Box::leak(
            format!(
                "{COMMON}{ROLLUPS}
CREATE TABLE IF NOT EXISTS vitals (
    patient_id text NOT NULL,
    kind text NOT NULL,
    at_ms integer NOT NULL,
    value double precision NOT NULL,
    PRIMARY KEY (patient_id, kind, at_ms)
);
"
            )
            .into_boxed_str(),
        ),
    }]
});

pub const BUCKET_TABLES: [(&str, i64); 3] = [
    ("vitals_minute", 60_000),
    ("vitals_hour", 3_600_000),
    ("vitals_day", 86_400_000),
];

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// (first ms, first ms of the next month, table suffix) of the month holding `ms`: the
/// bounds and name of the `vitals` partition a reading at `ms` goes to.
pub fn month_of(ms: i64) -> (i64, i64, String) {
    let t = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    let start = Utc
        .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let (ny, nm) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    let end = Utc
        .with_ymd_and_hms(ny, nm, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    (
        start.timestamp_millis(),
        end.timestamp_millis(),
        format!("{:04}{:02}", t.year(), t.month()),
    )
}

#[derive(Debug)]
pub struct PatientProjection {
    /// PostgreSQL: create monthly partitions of `vitals` as needed.
    pub partitioned: bool,
    known_partitions: parking_lot::Mutex<std::collections::HashSet<String>>,
}

impl PatientProjection {
    pub fn new(partitioned: bool) -> Self {
        PatientProjection {
            partitioned,
            known_partitions: Default::default(),
        }
    }

    async fn ensure_partition(
        &self,
        tx: &mut Transaction<'static, Any>,
        ms: i64,
    ) -> Result<(), ProjectionError> {
        let (from, to, suffix) = month_of(ms);
        if !self.partitioned || self.known_partitions.lock().contains(&suffix) {
            return Ok(());
        }
        sqlx::query(&format!("CREATE TABLE IF NOT EXISTS vitals_{suffix} PARTITION OF vitals FOR VALUES FROM ({from}) TO ({to})"))
            .execute(&mut **tx)
            .await?;
        self.known_partitions.lock().insert(suffix);
        Ok(())
    }

    async fn purge(
        &self,
        tx: &mut Transaction<'static, Any>,
        patient: &str,
    ) -> Result<(), ProjectionError> {
        for table in [
            "patient_view",
            "patient_care_team",
            "alert_rule_view",
            "alert_view",
            "vitals",
            "vitals_minute",
            "vitals_hour",
            "vitals_day",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE patient_id = $1"))
                .bind(patient)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn set_team(
        &self,
        tx: &mut Transaction<'static, Any>,
        patient: &str,
        team: &[triad_domain::UserId],
    ) -> Result<(), ProjectionError> {
        sqlx::query("DELETE FROM patient_care_team WHERE patient_id = $1")
            .bind(patient)
            .execute(&mut **tx)
            .await?;
        for doctor in team {
            sqlx::query("INSERT INTO patient_care_team (patient_id, doctor_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(patient)
                .bind(doctor.as_str())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Projection for PatientProjection {
    fn name(&self) -> &'static str {
        "patients"
    }

    fn migrations(&self) -> &'static [Migration] {
        &*MIGRATIONS
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "patient_view",
            "patient_care_team",
            "alert_rule_view",
            "alert_view",
            "vitals",
            "vitals_minute",
            "vitals_hour",
            "vitals_day",
        ]
    }

    async fn apply_batch(
        &self,
        tx: &mut Transaction<'static, Any>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            if let Err(e) = self.apply(tx, event).await {
                // The transaction rolls back, and with it any partition created in it: forget
                // them, or the retry would put their rows in the default partition.
                self.known_partitions.lock().clear();
                return Err(e);
            }
        }
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        e: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match e.aggregate_type.as_str() {
            "Patient" => match e.decode::<PatientEvent>()? {
                PatientEvent::PatientEnrolled {
                    patient_id,
                    name,
                    date_of_birth,
                    care_team,
                    enrolled_at,
                } => {
                    if e.shredded {
                        return Ok(()); // enrolled, then forgotten: nothing to show
                    }
                    sqlx::query("INSERT INTO patient_view (patient_id, name, date_of_birth, enrolled_at) VALUES ($1, $2, $3, $4) ON CONFLICT (patient_id) DO NOTHING")
                        .bind(&patient_id)
                        .bind(name.known().cloned())
                        .bind(date_of_birth.known().map(|d| d.to_string()))
                        .bind(rfc3339(enrolled_at))
                        .execute(&mut **tx)
                        .await?;
                    self.set_team(tx, &patient_id, &care_team).await?;
                }
                PatientEvent::CareTeamChanged { care_team, .. } => {
                    self.set_team(tx, &e.aggregate_id, &care_team).await?
                }
                PatientEvent::AlertRuleDefined { rule, .. } => {
                    sqlx::query("INSERT INTO alert_rule_view (patient_id, rule_id, kind, comparator, threshold, for_secs, defined_by) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING")
                        .bind(&e.aggregate_id)
                        .bind(&rule.rule_id)
                        .bind(rule.kind.as_str())
                        .bind(rule.comparator.as_str())
                        .bind(rule.threshold)
                        .bind(rule.for_secs)
                        .bind(rule.defined_by.as_str())
                        .execute(&mut **tx)
                        .await?;
                }
                PatientEvent::AlertRuleRetired { rule_id, .. } => {
                    sqlx::query(
                        "DELETE FROM alert_rule_view WHERE patient_id = $1 AND rule_id = $2",
                    )
                    .bind(&e.aggregate_id)
                    .bind(&rule_id)
                    .execute(&mut **tx)
                    .await?;
                }
                PatientEvent::PatientForgotten { .. } => self.purge(tx, &e.aggregate_id).await?,
            },
            "PatientVitals" => {
                if e.shredded {
                    return Ok(());
                }
                let VitalsEvent::VitalsRecorded {
                    patient_id,
                    readings,
                } = e.decode::<VitalsEvent>()?;
                let known: Vec<(&str, i64, f64)> = readings
                    .iter()
                    .filter_map(|r| match r.value {
                        Personal::Known(value) => {
                            Some((r.kind.as_str(), r.at.timestamp_millis(), value))
                        }
                        _ => None,
                    })
                    .collect();
                let mut months: Vec<i64> = known.iter().map(|(_, ms, _)| month_of(*ms).0).collect();
                months.sort_unstable();
                months.dedup();
                for first_ms in months {
                    self.ensure_partition(tx, first_ms).await?;
                }
                // Raw readings as multi-row inserts; RETURNING names the ones that were new
                // (a reading stored before is not counted twice). The rollups then get one
                // upsert per bucket, not per reading.
                let mut buckets: BTreeMap<(&str, String, i64), (f64, f64, f64, i64)> =
                    BTreeMap::new();
                for chunk in known.chunks(ROWS_PER_STATEMENT) {
                    let sql = format!(
                        "INSERT INTO vitals (patient_id, kind, at_ms, value) VALUES {} \
                         ON CONFLICT DO NOTHING RETURNING kind, at_ms, value",
                        values(chunk.len(), &["text", "text", "bigint", "double precision"])
                    );
                    let mut q = sqlx::query(&sql).persistent(false);
                    for (kind, ms, value) in chunk {
                        q = q.bind(&patient_id).bind(*kind).bind(*ms).bind(*value);
                    }
                    for row in q.fetch_all(&mut **tx).await? {
                        let kind: String = row.try_get("kind")?;
                        let ms: i64 = row.try_get("at_ms")?;
                        let value: f64 = row.try_get("value")?;
                        for (table, width) in BUCKET_TABLES {
                            let b = buckets
                                .entry((table, kind.clone(), ms.div_euclid(width) * width))
                                .or_insert((f64::INFINITY, f64::NEG_INFINITY, 0.0, 0));
                            b.0 = b.0.min(value);
                            b.1 = b.1.max(value);
                            b.2 += value;
                            b.3 += 1;
                        }
                    }
                }
                for ((table, kind, bucket), (lo, hi, sum, count)) in buckets {
                    sqlx::query(&format!(
                        "INSERT INTO {table} AS t (patient_id, kind, bucket_ms, min_value, max_value, sum_value, count) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (patient_id, kind, bucket_ms) DO UPDATE SET \
                         min_value = CASE WHEN excluded.min_value < t.min_value THEN excluded.min_value ELSE t.min_value END, \
                         max_value = CASE WHEN excluded.max_value > t.max_value THEN excluded.max_value ELSE t.max_value END, \
                         sum_value = t.sum_value + excluded.sum_value, count = t.count + excluded.count"
                    ))
                    .bind(&patient_id)
                    .bind(kind)
                    .bind(bucket)
                    .bind(lo)
                    .bind(hi)
                    .bind(sum)
                    .bind(count)
                    .execute(&mut **tx)
                    .await?;
                }
            }
            "PatientAlerts" => match e.decode::<AlertEvent>()? {
                AlertEvent::AlertRaised {
                    alert_id,
                    patient_id,
                    rule_id,
                    kind,
                    value,
                    raised_at,
                    ..
                } => {
                    if e.shredded {
                        return Ok(());
                    }
                    sqlx::query("INSERT INTO alert_view (alert_id, patient_id, rule_id, kind, value, raised_at, resolved_at, position) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7) ON CONFLICT DO NOTHING")
                        .bind(&alert_id)
                        .bind(&patient_id)
                        .bind(&rule_id)
                        .bind(kind.as_str())
                        .bind(value.known().copied())
                        .bind(rfc3339(raised_at))
                        .bind(e.position)
                        .execute(&mut **tx)
                        .await?;
                }
                AlertEvent::AlertResolved {
                    alert_id,
                    resolved_at,
                    ..
                } => {
                    sqlx::query("UPDATE alert_view SET resolved_at = $1 WHERE alert_id = $2")
                        .bind(rfc3339(resolved_at))
                        .bind(&alert_id)
                        .execute(&mut **tx)
                        .await?;
                }
            },
            _ => {}
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Queries

#[derive(Debug, Clone, PartialEq)]
pub struct VitalPoint {
    pub at_ms: i64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub count: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Raw,
    Minute,
    Hour,
    Day,
}

/// Readings of one kind in `[from, to)`, raw or per bucket, oldest first (at most `limit`).
pub async fn vitals(
    pool: &AnyPool,
    patient: &str,
    kind: &str,
    from_ms: i64,
    to_ms: i64,
    bucket: Bucket,
    limit: i64,
) -> Result<Vec<VitalPoint>, ProjectionError> {
    let rows = match bucket {
        Bucket::Raw => sqlx::query("SELECT at_ms AS at, value AS lo, value AS hi, value AS total, 1 AS n FROM vitals WHERE patient_id = $1 AND kind = $2 AND at_ms >= $3 AND at_ms < $4 ORDER BY at_ms LIMIT $5"),
        Bucket::Minute => sqlx::query("SELECT bucket_ms AS at, min_value AS lo, max_value AS hi, sum_value AS total, count AS n FROM vitals_minute WHERE patient_id = $1 AND kind = $2 AND bucket_ms >= $3 AND bucket_ms < $4 ORDER BY bucket_ms LIMIT $5"),
        Bucket::Hour => sqlx::query("SELECT bucket_ms AS at, min_value AS lo, max_value AS hi, sum_value AS total, count AS n FROM vitals_hour WHERE patient_id = $1 AND kind = $2 AND bucket_ms >= $3 AND bucket_ms < $4 ORDER BY bucket_ms LIMIT $5"),
        Bucket::Day => sqlx::query("SELECT bucket_ms AS at, min_value AS lo, max_value AS hi, sum_value AS total, count AS n FROM vitals_day WHERE patient_id = $1 AND kind = $2 AND bucket_ms >= $3 AND bucket_ms < $4 ORDER BY bucket_ms LIMIT $5"),
    }
    .bind(patient)
    .bind(kind)
    .bind(from_ms)
    .bind(to_ms)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let count: i64 = r.try_get("n")?;
            let total: f64 = r.try_get("total")?;
            Ok(VitalPoint {
                at_ms: r.try_get("at")?,
                min: r.try_get("lo")?,
                max: r.try_get("hi")?,
                avg: if count > 0 { total / count as f64 } else { 0.0 },
                count,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(Into::into)
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatientRow {
    pub patient_id: String,
    pub name: Option<String>,
    pub date_of_birth: Option<String>,
    pub care_team: Vec<String>,
}

pub async fn patient(pool: &AnyPool, id: &str) -> Result<Option<PatientRow>, ProjectionError> {
    let Some(row) = sqlx::query(
        "SELECT patient_id, name, date_of_birth FROM patient_view WHERE patient_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let team: Vec<String> = sqlx::query_scalar(
        "SELECT doctor_id FROM patient_care_team WHERE patient_id = $1 ORDER BY doctor_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(PatientRow {
        patient_id: row.try_get("patient_id")?,
        name: row.try_get("name")?,
        date_of_birth: row.try_get("date_of_birth")?,
        care_team: team,
    }))
}

/// Patients whose care team includes `doctor` (or all, for `None`), by id, after `after`.
pub async fn patient_ids(
    pool: &AnyPool,
    doctor: Option<&str>,
    after: &str,
    limit: i64,
) -> Result<Vec<String>, ProjectionError> {
    Ok(match doctor {
        Some(d) => sqlx::query_scalar("SELECT patient_id FROM patient_care_team WHERE doctor_id = $1 AND patient_id > $2 ORDER BY patient_id LIMIT $3").bind(d).bind(after).bind(limit).fetch_all(pool).await?,
        None => sqlx::query_scalar("SELECT patient_id FROM patient_view WHERE patient_id > $1 ORDER BY patient_id LIMIT $2").bind(after).bind(limit).fetch_all(pool).await?,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub alert_id: String,
    pub rule_id: String,
    pub kind: String,
    pub value: Option<f64>,
    pub raised_at: String,
    pub resolved_at: Option<String>,
}

pub async fn alerts(
    pool: &AnyPool,
    patient: &str,
    open_only: bool,
    limit: i64,
) -> Result<Vec<AlertRow>, ProjectionError> {
    let sql = if open_only {
        "SELECT alert_id, rule_id, kind, value, raised_at, resolved_at FROM alert_view WHERE patient_id = $1 AND resolved_at IS NULL ORDER BY position DESC LIMIT $2"
    } else {
        "SELECT alert_id, rule_id, kind, value, raised_at, resolved_at FROM alert_view WHERE patient_id = $1 ORDER BY position DESC LIMIT $2"
    };
    let rows = sqlx::query(sql)
        .bind(patient)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AlertRow {
                alert_id: r.try_get("alert_id")?,
                rule_id: r.try_get("rule_id")?,
                kind: r.try_get("kind")?,
                value: r.try_get("value")?,
                raised_at: r.try_get("raised_at")?,
                resolved_at: r.try_get("resolved_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(Into::into)
}
