//! Section (3): what the same PostgreSQL does with plain single-row INSERT transactions.

use crate::report::{histogram, Row};
use anyhow::Context as _;
use sqlx::postgres::PgPoolOptions;
use std::time::{Duration, Instant};

const CREATE: &str = "CREATE TABLE baseline_events (position bigserial primary key, stream text not null, seq bigint not null, payload jsonb not null, unique (stream, seq))";
const INSERT: &str =
    "INSERT INTO baseline_events (stream, seq, payload) VALUES ($1, $2, $3::jsonb)";

/// A ~200-byte JSON document shaped like a bid event.
fn payload(conn: usize, seq: i64) -> String {
    format!(
        r#"{{"bidder":"bench-dealer-{conn:03}","amount_cents":{amount},"client_bid_id":"c-{conn:03}-{seq:010}","placed_at":"2030-01-01T12:00:00.000000Z","ends_at":"2030-01-01T14:00:00Z","note":"baseline insert payload"}}"#,
        amount = 1_000 + seq
    )
}

pub async fn run(db_url: &str, connections: usize, duration: Duration) -> anyhow::Result<Row> {
    let pool = PgPoolOptions::new()
        .max_connections(connections as u32)
        .acquire_timeout(Duration::from_secs(30))
        .connect(db_url)
        .await
        .context("connecting the baseline pool")?;
    sqlx::query(CREATE)
        .execute(&pool)
        .await
        .context("creating baseline_events")?;
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(pool.acquire().await.context("baseline connection")?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            tokio::spawn(async move {
                let stream = format!("baseline-{c}");
                let mut hist = histogram();
                let mut errors = 0u64;
                let mut first_error = None;
                let mut seq = 0i64;
                while Instant::now() < deadline {
                    seq += 1;
                    let t0 = Instant::now();
                    let r = sqlx::query(INSERT)
                        .bind(&stream)
                        .bind(seq)
                        .bind(payload(c, seq))
                        .execute(&mut *conn)
                        .await;
                    hist.saturating_record(t0.elapsed().as_micros() as u64);
                    if let Err(e) = r {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                (hist, errors, first_error)
            })
        })
        .collect();
    let mut hist = histogram();
    let mut row = Row::new("baseline INSERT");
    let mut first = None;
    for h in handles {
        let (h, errors, first_error) = h.await.context("baseline task")?;
        hist.add(&h).expect("same bounds");
        row.error("SQL", errors);
        if first.is_none() {
            first = first_error;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = hist.len() - row.errors.get("SQL").copied().unwrap_or(0);
    row.rate = Some(ok as f64 / elapsed);
    row.set_latency(&hist);
    row.extra.insert("connections".into(), connections.into());
    row.extra.insert("elapsed_s".into(), elapsed.into());
    row.extra.insert("transactions".into(), ok.into());
    row.extra
        .insert("payload_bytes".into(), payload(0, 1).len().into());
    if let Some(e) = first {
        row.extra.insert("first_error".into(), e.into());
    }
    pool.close().await;
    Ok(row)
}
