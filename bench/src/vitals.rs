//! Section (5): remote patient monitoring through the real server.
//!
//! 1. ingest: `recordVitals` batches of 100 readings from concurrent tasks over many patients,
//!    against a COPY of as many rows into a scratch table of the read model's shape;
//! 2. alert latency: a rule "SPO2 LT 90 for PT1M", one episode at a time, from the triggering
//!    `recordVitals` response to the `alertRaised` frame on a graphql-transport-ws socket;
//! 3. query latency: N patients x 30 days of minute data loaded straight into the read model
//!    (`vitals` and its rollups), then `patient { vitals(...) }` as a care-team doctor.

use crate::bids::{bearer, error_code, Gql};
use crate::fanout::{connect, thousands, Ws};
use crate::report::{histogram, round, Row};
use crate::server::token;
use anyhow::{bail, Context as _};
use chrono::{SecondsFormat, TimeZone, Utc};
use futures::{SinkExt, StreamExt, TryStreamExt};
use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::header::HeaderValue;
use serde_json::{json, Value};
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const ENROLL: &str =
    "mutation($input: EnrollPatientInput!) { enrollPatient(input: $input) { id } }";
const RECORD: &str =
    "mutation($input: RecordVitalsInput!) { recordVitals(input: $input) { recorded } }";
const DEFINE_RULE: &str =
    "mutation($input: DefineAlertRuleInput!) { defineAlertRule(input: $input) { ruleId } }";
const ALERTS: &str = "subscription($id: ID!) { alertRaised(patientId: $id) { alertId raisedAt } }";
const QUERY: &str = "query($id: ID!, $from: DateTime, $to: DateTime, $bucket: VitalBucket!) { patient(id: $id) { vitals(kind: HEART_RATE, from: $from, to: $to, bucket: $bucket) { at min max avg count } } }";

pub const DOCTOR: &str = "bench-doctor";
const MINUTE_MS: i64 = 60_000;
const DAY_MINUTES: i64 = 1_440;
const BATCH: usize = 100;
/// 430 batches of 100 minutes: 43,000 minutes, inside the last 30 days.
const BATCHES_PER_PATIENT: usize = 430;
const QUERIES: usize = 200;
const LOAD_CHUNK: usize = 10;
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Config {
    pub ingest_duration: Duration,
    pub ingest_tasks: usize,
    pub episodes: usize,
    pub query_patients: usize,
}

/// Rows for the table and lines for the notes under it; failures become failed rows.
pub async fn run(
    gql: &Gql,
    server: SocketAddr,
    db_url: &str,
    cfg: &Config,
) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let pool = match PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(60))
        .connect(db_url)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            rows.push(Row::failed("vitals", &anyhow::Error::new(e)));
            return (rows, notes);
        }
    };

    eprintln!(
        "triad-bench: vitals ingest ({} tasks, {:?})",
        cfg.ingest_tasks, cfg.ingest_duration
    );
    let ingest = ingest(gql, &pool, cfg).await;
    let (recorded, ids) = match ingest {
        Ok((row, recorded, ids)) => {
            rows.push(row);
            (recorded, ids)
        }
        Err(e) => {
            rows.push(Row::failed("vitals ingest", &e));
            (0, Vec::new())
        }
    };
    if recorded > 0 {
        eprintln!("triad-bench: vitals COPY baseline ({recorded} rows)");
        match copy_baseline(&pool, recorded, &ids).await {
            Ok(row) => rows.push(row),
            Err(e) => rows.push(Row::failed("vitals COPY", &e)),
        }
        notes.extend(ingest_notes(&rows));
    }

    eprintln!(
        "triad-bench: vitals alert latency ({} episodes)",
        cfg.episodes
    );
    rows.push(
        alerts(gql, server, &pool, cfg.episodes)
            .await
            .unwrap_or_else(|e| Row::failed("vitals alert", &e)),
    );

    let n = cfg.query_patients;
    eprintln!("triad-bench: vitals query ({n} patients x 30 days of minutes)");
    match queries(gql, &pool, n).await {
        Ok((more, note)) => {
            rows.extend(more);
            notes.push(note);
        }
        Err(e) => rows.push(Row::failed(
            format!("vitals load {} patients", thousands(n)),
            &e,
        )),
    }
    pool.close().await;
    (rows, notes)
}

/// Ingest against COPY: as accepted by the API, and once the read model has caught up.
fn ingest_notes(rows: &[Row]) -> Vec<String> {
    let find = |name: &str| rows.iter().find(|r| r.section == name);
    let (Some(ingest), Some(copy)) = (find("vitals ingest"), find("vitals COPY")) else {
        return Vec::new();
    };
    let (Some(i), Some(c)) = (ingest.rate, copy.rate.filter(|c| *c > 0.0)) else {
        return Vec::new();
    };
    let mut out = vec![format!(
        "vitals ingest vs COPY: {i:.0} readings/s / {c:.0} rows/s = {:.3}x",
        i / c
    )];
    let extra = |k: &str| ingest.extra.get(k).and_then(Value::as_f64);
    if let (Some(lag), Some(e2e)) = (
        extra("projections_caught_up_after_s"),
        extra("read_model_readings_per_s"),
    ) {
        out.push(format!(
            "vitals ingest: read model caught up {lag:.1} s after the last batch: {e2e:.0} readings/s end to end = {:.3}x COPY",
            e2e / c
        ));
    }
    out
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn now_minute() -> i64 {
    Utc::now().timestamp_millis().div_euclid(MINUTE_MS)
}

/// The months overlapping `[from_ms, to_ms)`.
fn months(from_ms: i64, to_ms: i64) -> Vec<(i64, i64, String)> {
    let mut out = Vec::new();
    let mut at = from_ms;
    while at < to_ms {
        // Named as the server names its `vitals` partitions.
        let m = triad_projections::patients::month_of(at);
        at = m.1;
        out.push(m);
    }
    out
}

/// Enrolls `n` patients as an admin, `concurrency` at a time; returns their ids.
async fn enroll(
    gql: &Gql,
    n: usize,
    care_team: &[&str],
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let admin = bearer("bench-admin", "admin");
    futures::stream::iter(0..n)
        .map(|i| {
            let body = json!({
                "query": ENROLL,
                "variables": { "input": {
                    "name": format!("Bench patient {i}"),
                    "dateOfBirth": "1960-05-17",
                    "careTeam": care_team,
                } }
            })
            .to_string();
            let (gql, admin) = (gql.clone(), admin.clone());
            async move {
                let v = gql.post(&admin, body).await.map_err(anyhow::Error::msg)?;
                match v["data"]["enrollPatient"]["id"].as_str() {
                    Some(id) => Ok(id.to_string()),
                    None => bail!("enrollPatient failed: {v}"),
                }
            }
        })
        .buffered(concurrency)
        .try_collect()
        .await
        .context("enrolling patients")
}

/// Waits until every projection (and the alert engine) has processed the whole log.
async fn caught_up(pool: &PgPool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let (head, low): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE((SELECT max(position) FROM events), 0)::bigint, \
             COALESCE((SELECT min(position) FROM projection_checkpoints), 0)::bigint",
        )
        .fetch_one(pool)
        .await
        .context("reading projection checkpoints")?;
        if low >= head {
            return Ok(start.elapsed());
        }
        if start.elapsed() > CATCH_UP_TIMEOUT {
            bail!(
                "projections still behind after {CATCH_UP_TIMEOUT:?} (log {head}, slowest {low})"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn record_body(patient: &str, readings: &[(&str, f64, i64)]) -> String {
    let readings: Vec<Value> = readings
        .iter()
        .map(|(kind, value, ms)| json!({ "kind": kind, "value": value, "at": rfc3339(*ms) }))
        .collect();
    json!({
        "query": RECORD,
        "variables": { "input": { "patientId": patient, "readings": readings } }
    })
    .to_string()
}

/// Batch `k` of the ingest (and of the COPY): patient `k % patients`, minutes
/// `base + (k / patients) * 100 ..` with a HEART_RATE value in 50..=120.
fn ingest_reading(base_min: i64, patients: usize, k: usize, j: usize) -> (usize, i64, f64) {
    let p = k % patients;
    let minute = base_min + ((k / patients) * BATCH + j) as i64;
    let value = 50.0 + ((p as i64 * 31 + minute) % 71) as f64;
    (p, minute * MINUTE_MS, value)
}

struct IngestStats {
    hist: hdrhistogram::Histogram<u64>,
    recorded: u64,
    sent: u64,
    errors: BTreeMap<String, u64>,
    samples: Vec<String>,
}

/// Returns the row, the number of readings recorded and the patients' ids.
async fn ingest(gql: &Gql, pool: &PgPool, cfg: &Config) -> anyhow::Result<(Row, u64, Vec<String>)> {
    let patients_n = 2 * cfg.ingest_tasks;
    let patients = Arc::new(enroll(gql, patients_n, &[DOCTOR], 32).await?);
    caught_up(pool).await?;
    let base_min = now_minute() - 30 * DAY_MINUTES + 60;
    let total_batches = patients_n * BATCHES_PER_PATIENT;
    let next = Arc::new(AtomicUsize::new(0));
    let admin = bearer("bench-admin", "admin");
    let start = Instant::now();
    let deadline = start + cfg.ingest_duration;
    let handles: Vec<_> = (0..cfg.ingest_tasks)
        .map(|_| {
            let (gql, patients, next, admin) =
                (gql.clone(), patients.clone(), next.clone(), admin.clone());
            tokio::spawn(async move {
                let mut s = IngestStats {
                    hist: histogram(),
                    recorded: 0,
                    sent: 0,
                    errors: BTreeMap::new(),
                    samples: Vec::new(),
                };
                while Instant::now() < deadline {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= total_batches {
                        break;
                    }
                    let mut readings = Vec::with_capacity(BATCH);
                    let mut patient = 0;
                    for j in 0..BATCH {
                        let (p, ms, value) = ingest_reading(base_min, patients.len(), k, j);
                        patient = p;
                        readings.push(("HEART_RATE", value, ms));
                    }
                    let body = record_body(&patients[patient], &readings);
                    let t0 = Instant::now();
                    let reply = gql.post(&admin, body).await;
                    s.hist.saturating_record(t0.elapsed().as_micros() as u64);
                    s.sent += BATCH as u64;
                    match reply {
                        Err(e) => {
                            *s.errors.entry("TRANSPORT".into()).or_default() += 1;
                            if s.samples.len() < 3 {
                                s.samples.push(e);
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Ok(v) => match error_code(&v) {
                            Some(code) => {
                                *s.errors.entry(code.to_string()).or_default() += 1;
                                if s.samples.len() < 3 {
                                    s.samples.push(v["errors"][0].to_string());
                                }
                            }
                            None => {
                                let n = v["data"]["recordVitals"]["recorded"].as_u64();
                                s.recorded += n.unwrap_or(0);
                                if n != Some(BATCH as u64) {
                                    *s.errors.entry("SHORT_BATCH".into()).or_default() += 1;
                                }
                            }
                        },
                    }
                }
                s
            })
        })
        .collect();
    let mut row = Row::new("vitals ingest");
    let mut hist = histogram();
    let (mut recorded, mut sent) = (0u64, 0u64);
    let mut samples = Vec::new();
    for h in handles {
        let s = h.await.context("ingest task")?;
        hist.add(&s.hist).expect("same bounds");
        recorded += s.recorded;
        sent += s.sent;
        for (k, v) in s.errors {
            row.error(k, v);
        }
        samples.extend(s.samples);
    }
    let elapsed = start.elapsed().as_secs_f64();
    row.rate = Some(recorded as f64 / elapsed);
    row.set_latency(&hist);
    // The read model catches up behind the API: how long it took is part of the story.
    let catch_up = caught_up(pool).await?.as_secs_f64();
    let end_to_end = recorded as f64 / (elapsed + catch_up);
    for (k, v) in [
        ("tasks", json!(cfg.ingest_tasks)),
        ("patients", json!(patients_n)),
        ("readings_per_batch", json!(BATCH)),
        ("elapsed_s", json!(round(elapsed, 3))),
        ("batches", json!(hist.len())),
        ("readings_sent", json!(sent)),
        ("readings_recorded", json!(recorded)),
        ("projections_caught_up_after_s", json!(round(catch_up, 3))),
        ("read_model_readings_per_s", json!(round(end_to_end, 1))),
        (
            "error_samples",
            json!(samples.iter().take(5).collect::<Vec<_>>()),
        ),
    ] {
        row.extra.insert(k.into(), v);
    }
    Ok((row, recorded, patients.to_vec()))
}

/// COPY of `rows` rows shaped like the ingest's into `bench_vitals`, one connection.
async fn copy_baseline(pool: &PgPool, rows: u64, ids: &[String]) -> anyhow::Result<Row> {
    let base_min = now_minute() - 30 * DAY_MINUTES + 60;
    let mut conn = pool.acquire().await.context("COPY connection")?;
    sqlx::query("DROP TABLE IF EXISTS bench_vitals")
        .execute(&mut *conn)
        .await?;
    sqlx::query("CREATE TABLE bench_vitals (patient_id text, kind text, at_ms bigint, value double precision, PRIMARY KEY (patient_id, kind, at_ms)) PARTITION BY RANGE (at_ms)")
        .execute(&mut *conn)
        .await
        .context("creating bench_vitals")?;
    let last_ms = (base_min + (BATCHES_PER_PATIENT * BATCH) as i64) * MINUTE_MS;
    for (from, to, suffix) in months(base_min * MINUTE_MS, last_ms + 1) {
        sqlx::query(&format!(
            "CREATE TABLE bench_vitals_{suffix} PARTITION OF bench_vitals FOR VALUES FROM ({from}) TO ({to})"
        ))
        .execute(&mut *conn)
        .await
        .context("creating a bench_vitals partition")?;
    }
    // The same (patient, minute, value) rows as the ingest, as COPY text, built beforehand.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut buf = Vec::with_capacity(1 << 20);
    for i in 0..rows as usize {
        let (p, ms, value) = ingest_reading(base_min, ids.len(), i / BATCH, i % BATCH);
        use std::io::Write as _;
        writeln!(buf, "{}\tHEART_RATE\t{ms}\t{value}", ids[p]).expect("in memory");
        if buf.len() >= 1 << 20 {
            chunks.push(std::mem::replace(&mut buf, Vec::with_capacity(1 << 20)));
        }
    }
    if !buf.is_empty() {
        chunks.push(buf);
    }
    let start = Instant::now();
    let mut copy = conn
        .copy_in_raw("COPY bench_vitals (patient_id, kind, at_ms, value) FROM STDIN (FORMAT text)")
        .await
        .context("COPY")?;
    for chunk in chunks {
        copy.send(chunk).await.context("COPY data")?;
    }
    let copied = copy.finish().await.context("COPY finish")?;
    let elapsed = start.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_vitals")
        .execute(&mut *conn)
        .await?;
    let mut row = Row::new("vitals COPY");
    row.rate = Some(copied as f64 / elapsed);
    row.extra.insert("rows".into(), copied.into());
    row.extra
        .insert("elapsed_s".into(), round(elapsed, 3).into());
    row.extra.insert("connections".into(), 1.into());
    if copied != rows {
        row.error("ROWS", rows.abs_diff(copied));
    }
    Ok(row)
}

/// A frame on the alert socket.
struct Frame {
    at: Instant,
    /// `Ok(alert id)` for a `next` with data, `Err(kind)` for anything else worth counting.
    alert: Result<String, String>,
}

async fn alert_reader(mut ws: Ws, tx: mpsc::UnboundedSender<Frame>) {
    while let Some(msg) = ws.next().await {
        let at = Instant::now();
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let v: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
        let alert = match v["type"].as_str() {
            Some("ping") => {
                let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
                continue;
            }
            Some("next") => match v["payload"]["data"]["alertRaised"]["alertId"].as_str() {
                Some(id) => Ok(id.to_string()),
                None => Err(format!("next without data: {}", v["payload"])),
            },
            Some("error") => Err(format!("error frame: {}", v["payload"])),
            Some("complete") => Err("complete".into()),
            _ => continue,
        };
        if tx.send(Frame { at, alert }).is_err() {
            return;
        }
    }
    let _ = tx.send(Frame {
        at: Instant::now(),
        alert: Err("closed".into()),
    });
}

/// (kind, value, at ms).
type Reading = (&'static str, f64, i64);

/// SPO2 readings that start an episode at `t` (below 90 for a minute) and the one that ends it.
fn episode(t_ms: i64) -> ([Reading; 4], [Reading; 1]) {
    (
        [
            ("SPO2", 85.0, t_ms),
            ("SPO2", 85.0, t_ms + 30_000),
            ("SPO2", 84.0, t_ms + 60_000),
            ("SPO2", 84.0, t_ms + 61_000),
        ],
        [("SPO2", 98.0, t_ms + 90_000)],
    )
}

async fn alerts(
    gql: &Gql,
    server: SocketAddr,
    pool: &PgPool,
    episodes: usize,
) -> anyhow::Result<Row> {
    let patient = enroll(gql, 1, &[DOCTOR], 1).await?.remove(0);
    let doctor = bearer(DOCTOR, "doctor");
    let body = json!({
        "query": DEFINE_RULE,
        "variables": { "input": {
            "patientId": patient, "kind": "SPO2", "comparator": "LT",
            "threshold": 90, "forDuration": "PT1M",
        } }
    })
    .to_string();
    let v = gql.post(&doctor, body).await.map_err(anyhow::Error::msg)?;
    if v["data"]["defineAlertRule"]["ruleId"].as_str().is_none() {
        bail!("defineAlertRule failed: {v}");
    }
    let init = json!({
        "type": "connection_init",
        "payload": { "Authorization": format!("Bearer {}", token(DOCTOR, "doctor")) }
    })
    .to_string();
    let subscribe = json!({
        "id": "1", "type": "subscribe",
        "payload": { "query": ALERTS, "variables": { "id": patient } }
    })
    .to_string();
    let ws = connect(0, server, &init, &subscribe)
        .await
        .map_err(anyhow::Error::msg)
        .context("alert subscription")?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(alert_reader(ws, tx));
    caught_up(pool).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut row = Row::new("vitals alert");
    let mut hist = histogram();
    let mut http = histogram();
    let (mut lost, mut extra_frames, mut before_response) = (0u64, 0u64, 0u64);
    let mut samples: Vec<String> = Vec::new();
    // Episode 0 warms up (and proves the subscription is live); it is not measured.
    let base_min = now_minute() - 3 * (episodes as i64 + 1) - 5;
    for k in 0..=episodes {
        let t_ms = (base_min + 3 * k as i64) * MINUTE_MS;
        let (raise, resolve) = episode(t_ms);
        while let Ok(f) = rx.try_recv() {
            extra_frames += 1;
            if let Err(e) = f.alert {
                samples.push(e);
            }
        }
        let t0 = Instant::now();
        let reply = gql.post(&doctor, record_body(&patient, &raise)).await;
        let responded = Instant::now();
        http.saturating_record((responded - t0).as_micros() as u64);
        match reply {
            Err(e) => {
                row.error("record/TRANSPORT", 1);
                samples.push(e);
                continue;
            }
            Ok(v) => {
                if let Some(code) = error_code(&v) {
                    row.error(format!("record/{code}"), 1);
                    samples.push(v["errors"][0].to_string());
                    continue;
                }
            }
        }
        let wait = if k == 0 { 15 } else { 10 };
        match tokio::time::timeout(Duration::from_secs(wait), rx.recv()).await {
            Ok(Some(Frame { at, alert: Ok(_) })) => {
                if k > 0 {
                    if at < responded {
                        before_response += 1;
                    }
                    hist.saturating_record(
                        at.saturating_duration_since(responded).as_micros() as u64
                    );
                }
            }
            Ok(Some(Frame { alert: Err(e), .. })) => {
                row.error("sub/frame", 1);
                samples.push(e);
                if k > 0 {
                    lost += 1;
                }
            }
            Ok(None) => bail!("the alert socket closed"),
            Err(_) => {
                if k == 0 {
                    bail!("no alert for the warm-up episode within {wait} s");
                }
                lost += 1;
            }
        }
        let reply = gql.post(&doctor, record_body(&patient, &resolve)).await;
        match reply {
            Err(e) => {
                row.error("resolve/TRANSPORT", 1);
                samples.push(e);
            }
            Ok(v) => {
                if let Some(code) = error_code(&v) {
                    row.error(format!("resolve/{code}"), 1);
                    samples.push(v["errors"][0].to_string());
                }
            }
        }
        // Let the resolution go through before the next episode starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    while rx.try_recv().is_ok() {
        extra_frames += 1;
    }
    reader.abort();
    row.expected = Some(episodes as u64);
    row.lost = Some(lost);
    row.duplicated = Some(extra_frames);
    row.set_latency(&hist);
    for (k, v) in [
        ("rule", json!("SPO2 LT 90 for PT1M")),
        ("episodes", json!(episodes)),
        (
            "record_p50_ms",
            json!(http.value_at_quantile(0.5) as f64 / 1000.0),
        ),
        ("frames_before_response", json!(before_response)),
        (
            "error_samples",
            json!(samples.iter().take(5).collect::<Vec<_>>()),
        ),
    ] {
        row.extra.insert(k.into(), v);
    }
    Ok(row)
}

/// Enrolls `n` patients, loads 30 days of minute data for each into the read model, then
/// measures the two queries. Returns the rows and a note about the load.
async fn queries(gql: &Gql, pool: &PgPool, n: usize) -> anyhow::Result<(Vec<Row>, String)> {
    let label = format!("vitals load {} patients", thousands(n));
    let t_enroll = Instant::now();
    let patients = enroll(gql, n, &[DOCTOR], 32).await?;
    let enroll_s = t_enroll.elapsed().as_secs_f64();
    caught_up(pool).await?;

    let end_min = now_minute();
    let start_min = end_min - 30 * DAY_MINUTES;
    let (from_ms, to_ms) = (start_min * MINUTE_MS, end_min * MINUTE_MS);
    let start = Instant::now();
    for (from, to, suffix) in months(from_ms, to_ms) {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS vitals_{suffix} PARTITION OF vitals FOR VALUES FROM ({from}) TO ({to})"
        ))
        .execute(pool)
        .await
        .with_context(|| format!("creating partition vitals_{suffix}"))?;
    }
    let chunks: Vec<Vec<String>> = patients.chunks(LOAD_CHUNK).map(<[_]>::to_vec).collect();
    let total_chunks = chunks.len();
    let done = AtomicUsize::new(0);
    let counts: Vec<[u64; 4]> = futures::stream::iter(chunks)
        .map(|ids| {
            let done = &done;
            async move {
                let r = load_chunk(pool, &ids, start_min, end_min).await?;
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if d.is_multiple_of((total_chunks / 10).max(1)) {
                    eprintln!(
                        "triad-bench:   loaded {d}/{total_chunks} chunks ({:.0} s)",
                        start.elapsed().as_secs_f64()
                    );
                }
                anyhow::Ok(r)
            }
        })
        .buffer_unordered(2)
        .try_collect()
        .await?;
    let load_s = start.elapsed().as_secs_f64();
    sqlx::query("ANALYZE vitals, vitals_minute, vitals_hour, vitals_day")
        .execute(pool)
        .await
        .context("ANALYZE")?;
    let load_analyze_s = start.elapsed().as_secs_f64();
    let mut sums = [0u64; 4];
    for c in &counts {
        for (s, v) in sums.iter_mut().zip(c) {
            *s += v;
        }
    }
    let total_rows: u64 = sums.iter().sum();
    let mut load = Row::new(label);
    load.rate = Some(total_rows as f64 / load_s);
    for (k, v) in [
        ("patients", json!(n)),
        ("minutes_per_patient", json!(end_min - start_min)),
        ("enroll_s", json!(round(enroll_s, 3))),
        ("load_s", json!(round(load_s, 3))),
        ("load_and_analyze_s", json!(round(load_analyze_s, 3))),
        ("rows_vitals", json!(sums[0])),
        ("rows_vitals_minute", json!(sums[1])),
        ("rows_vitals_hour", json!(sums[2])),
        ("rows_vitals_day", json!(sums[3])),
        ("rows_total", json!(total_rows)),
        ("connections", json!(2)),
    ] {
        load.extra.insert(k.into(), v);
    }
    let note = format!(
        "vitals load: {} patients x {} minutes: {} rows in vitals + {} rollup rows in {:.1} s (+ ANALYZE {:.1} s), enrolment {:.1} s",
        thousands(n),
        end_min - start_min,
        thousands(sums[0] as usize),
        thousands((sums[1] + sums[2] + sums[3]) as usize),
        load_s,
        load_analyze_s - load_s,
        enroll_s
    );

    let doctor = bearer(DOCTOR, "doctor");
    let mut rng = StdRng::seed_from_u64(7);
    let hour = query_row(
        gql,
        &doctor,
        &patients,
        "vitals query hour 30d",
        "HOUR",
        |_| (from_ms, to_ms),
        &mut rng,
    )
    .await;
    let minute = query_row(
        gql,
        &doctor,
        &patients,
        "vitals query minute 1d",
        "MINUTE",
        |rng| {
            let day = rng.gen_range(0..30);
            let from = from_ms + day * DAY_MINUTES * MINUTE_MS;
            (from, from + DAY_MINUTES * MINUTE_MS)
        },
        &mut rng,
    )
    .await;
    Ok((vec![load, hour, minute], note))
}

/// Inserts the chunk's minute readings, then its three rollups; returns the row counts.
async fn load_chunk(
    pool: &PgPool,
    ids: &[String],
    start_min: i64,
    end_min: i64,
) -> anyhow::Result<[u64; 4]> {
    let mut conn = pool.acquire().await?;
    let vitals = sqlx::query(
        "INSERT INTO vitals (patient_id, kind, at_ms, value) \
         SELECT p.id, 'HEART_RATE', m * 60000, 55 + floor(random() * 50) \
         FROM unnest($1::text[]) AS p(id), generate_series($2::bigint, $3::bigint - 1) AS m",
    )
    .bind(ids)
    .bind(start_min)
    .bind(end_min)
    .execute(&mut *conn)
    .await
    .context("loading vitals")?
    .rows_affected();
    let mut out = [vitals, 0, 0, 0];
    // Each rollup from the next finer level: the minutes from the readings, the hours from
    // the minutes, the days from the hours.
    let levels = [
        ("vitals_minute", MINUTE_MS, "SELECT patient_id, kind, at_ms AS t, value AS lo, value AS hi, value AS total, 1 AS n FROM vitals"),
        ("vitals_hour", 60 * MINUTE_MS, "SELECT patient_id, kind, bucket_ms AS t, min_value AS lo, max_value AS hi, sum_value AS total, count AS n FROM vitals_minute"),
        ("vitals_day", DAY_MINUTES * MINUTE_MS, "SELECT patient_id, kind, bucket_ms AS t, min_value AS lo, max_value AS hi, sum_value AS total, count AS n FROM vitals_hour"),
    ];
    for (i, (table, width, source)) in levels.into_iter().enumerate() {
        let key = if i == 0 { "at_ms" } else { "bucket_ms" };
        out[i + 1] = sqlx::query(&format!(
            "INSERT INTO {table} (patient_id, kind, bucket_ms, min_value, max_value, sum_value, count) \
             SELECT patient_id, kind, t / {width} * {width}, min(lo), max(hi), sum(total), sum(n) \
             FROM ({source} WHERE patient_id = ANY($1) AND kind = 'HEART_RATE' AND {key} >= $2 AND {key} < $3) AS s \
             GROUP BY 1, 2, 3"
        ))
        .bind(ids)
        .bind(start_min * MINUTE_MS)
        .bind(end_min * MINUTE_MS)
        .execute(&mut *conn)
        .await
        .with_context(|| format!("loading {table}"))?
        .rows_affected();
    }
    Ok(out)
}

/// QUERIES sequential queries over random loaded patients; a row (failed rows included).
async fn query_row(
    gql: &Gql,
    doctor: &HeaderValue,
    patients: &[String],
    section: &str,
    bucket: &str,
    range: impl Fn(&mut StdRng) -> (i64, i64),
    rng: &mut StdRng,
) -> Row {
    eprintln!("triad-bench: {section} ({QUERIES} queries)");
    let mut row = Row::new(section);
    let mut hist = histogram();
    let (mut points, mut min_points) = (0u64, u64::MAX);
    let mut samples: Vec<String> = Vec::new();
    let start = Instant::now();
    for _ in 0..QUERIES {
        let patient = &patients[rng.gen_range(0..patients.len())];
        let (from, to) = range(rng);
        let body = json!({
            "query": QUERY,
            "variables": { "id": patient, "from": rfc3339(from), "to": rfc3339(to), "bucket": bucket }
        })
        .to_string();
        let t0 = Instant::now();
        let reply = gql.post(doctor, body).await;
        hist.saturating_record(t0.elapsed().as_micros() as u64);
        match reply {
            Err(e) => {
                row.error("TRANSPORT", 1);
                samples.push(e);
            }
            Ok(v) => match error_code(&v) {
                Some(code) => {
                    row.error(code.to_string(), 1);
                    samples.push(v["errors"][0].to_string());
                }
                None => {
                    let n = v["data"]["patient"]["vitals"]
                        .as_array()
                        .map_or(0, |a| a.len() as u64);
                    if n == 0 {
                        row.error("EMPTY", 1);
                    }
                    points += n;
                    min_points = min_points.min(n);
                }
            },
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    row.rate = Some(QUERIES as f64 / elapsed);
    row.set_latency(&hist);
    for (k, v) in [
        ("queries", json!(QUERIES)),
        ("bucket", json!(bucket)),
        ("points_total", json!(points)),
        (
            "points_min",
            json!(if min_points == u64::MAX {
                0
            } else {
                min_points
            }),
        ),
        (
            "points_mean",
            json!(round(points as f64 / QUERIES as f64, 1)),
        ),
        (
            "error_samples",
            json!(samples.iter().take(5).collect::<Vec<_>>()),
        ),
    ] {
        row.extra.insert(k.into(), v);
    }
    row
}

#[cfg(test)]
mod tests {
    #[test]
    fn months_and_readings() {
        // 2026-01-20 .. 2026-03-02 spans January, February and March.
        let from = 1_768_867_200_000; // 2026-01-20T00:00:00Z
        let to = 1_772_409_600_000; // 2026-03-02T00:00:00Z
        let m = super::months(from, to);
        let names: Vec<&str> = m.iter().map(|x| x.2.as_str()).collect();
        assert_eq!(names, ["202601", "202602", "202603"]);
        assert_eq!(m[0].1, m[1].0);
        let (p, ms, v) = super::ingest_reading(1000, 4, 5, 3);
        assert_eq!(p, 1);
        assert_eq!(ms, (1000 + 100 + 3) * 60_000);
        assert!((50.0..=120.0).contains(&v));
    }
}
