//! Section `rebuild`: `triad rebuild --all` over E auction events appended straight into the
//! events table, against a raw sequential scan of the same table.

use crate::extra::{copy_line, metadata, wait_sequenced, Ctx, COPY_EVENTS};
use crate::report::Row;
use crate::server::BenchDb;
use anyhow::{bail, Context as _};
use serde_json::json;
use std::time::{Duration, Instant};

const BIDS_PER_AUCTION: usize = 1_000;

/// The events of the log, in order: (aggregate_id, sequence, event_type, version, payload, metadata).
fn events(n: usize, mut f: impl FnMut([&str; 7])) {
    let now = chrono::Utc::now();
    let at = now.to_rfc3339();
    let ends = (now + chrono::Duration::days(7)).to_rfc3339();
    let mut i = 0usize;
    let mut auction = 0usize;
    while i < n {
        let id = format!("bench-rebuild-{auction:06}");
        let payload = format!(
            r#"{{"AuctionOpened":{{"auction_id":"{id}","seller":"bench-seller","title":"Bench car {auction}","starting_price":1000,"min_increment":1,"reserve_price":0,"ends_at":"{ends}","opened_at":"{at}","has_reserve":false}}}}"#
        );
        let meta = metadata("bench-seller", "seller", &at);
        f(["Auction", &id, "1", "AuctionOpened", "2", &payload, &meta]);
        i += 1;
        for b in 0..BIDS_PER_AUCTION {
            if i >= n {
                break;
            }
            let bidder = format!("bench-dealer-{}", b % 50);
            let amount = 1_000 + b * 10;
            let payload = format!(
                r#"{{"BidPlaced":{{"bidder":"{bidder}","amount":{amount},"client_bid_id":null,"placed_at":"{at}","ends_at":"{ends}"}}}}"#
            );
            let meta = metadata(&bidder, "dealer", &at);
            let seq = (b + 2).to_string();
            f(["Auction", &id, &seq, "BidPlaced", "1", &payload, &meta]);
            i += 1;
        }
        auction += 1;
    }
}

/// Runs `triad rebuild --all --quiet --store URL`; returns (elapsed, stdout).
async fn rebuild(ctx: &Ctx, store: &str) -> anyhow::Result<(Duration, String)> {
    let t0 = Instant::now();
    let out = tokio::process::Command::new(&ctx.triad)
        .args(["rebuild", "--all", "--quiet", "--store", store])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .context("running triad rebuild")?;
    let took = t0.elapsed();
    if !out.status.success() {
        bail!(
            "triad rebuild failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((
        took,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

pub async fn run(ctx: &Ctx, n: usize, sqlite: bool) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let label = crate::fanout::thousands(n);
    match BenchDb::create(&ctx.admin_url).await {
        Ok(db) => {
            match postgres(ctx, &db, n, &label).await {
                Ok((r, line)) => {
                    rows.extend(r);
                    notes.push(line);
                }
                Err(e) => rows.push(Row::failed(format!("rebuild --all PG ({label})"), &e)),
            }
            if let Err(e) = db.drop_db().await {
                eprintln!("triad-bench: dropping {}: {e:#}", db.name);
            }
        }
        Err(e) => rows.push(Row::failed(format!("rebuild --all PG ({label})"), &e)),
    }
    if sqlite {
        match sqlite_run(ctx, n, &label).await {
            Ok((r, line)) => {
                rows.extend(r);
                notes.push(line);
            }
            Err(e) => rows.push(Row::failed(format!("rebuild --all SQLite ({label})"), &e)),
        }
    }
    (rows, notes)
}

fn rows_for(
    engine: &str,
    label: &str,
    n: usize,
    took: Duration,
    out: String,
    scan: Duration,
) -> (Vec<Row>, String) {
    let rate = n as f64 / took.as_secs_f64();
    let scan_rate = n as f64 / scan.as_secs_f64();
    let mut row = Row::new(format!("rebuild --all {engine} ({label})"));
    row.rate = Some(rate);
    row.max_ms = Some(took.as_secs_f64() * 1000.0);
    row.extra.insert("events".into(), json!(n));
    row.extra.insert("output".into(), json!(out));
    let mut base = Row::new(format!("raw scan {engine} ({label})"));
    base.rate = Some(scan_rate);
    base.max_ms = Some(scan.as_secs_f64() * 1000.0);
    let line = format!(
        "rebuild {engine}: {rate:.0} events/s in {:.1} s vs raw scan {scan_rate:.0} events/s: {:.3}x (target 100,000 events/s on PostgreSQL); ops/s = events/s, max ms = wall time; {}",
        took.as_secs_f64(),
        rate / scan_rate,
        out.replace('\n', "; ")
    );
    (vec![row, base], line)
}

async fn postgres(
    ctx: &Ctx,
    db: &BenchDb,
    n: usize,
    label: &str,
) -> anyhow::Result<(Vec<Row>, String)> {
    let srv = ctx.start(db, "server-rebuild", &[]).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await?;
    eprintln!("triad-bench: rebuild: COPY {n} events");
    let t0 = Instant::now();
    {
        let mut conn = pool.acquire().await?;
        let mut copy = conn.copy_in_raw(COPY_EVENTS).await?;
        let mut buf = String::new();
        let mut chunks = Vec::new();
        events(n, |f| {
            copy_line(&mut buf, f);
            if buf.len() > 1 << 20 {
                chunks.push(std::mem::take(&mut buf));
            }
        });
        chunks.push(buf);
        for c in chunks {
            copy.send(c.into_bytes()).await?;
        }
        copy.finish().await?;
    }
    eprintln!(
        "triad-bench: rebuild: copied in {:.1?}; waiting for the sequencer",
        t0.elapsed()
    );
    wait_sequenced(&pool, Duration::from_secs(1200)).await?;
    eprintln!("triad-bench: rebuild: sequenced after {:.1?}", t0.elapsed());
    srv.stop().await;
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;
    let t1 = Instant::now();
    let (count, _bytes): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), sum(length(payload::text))::bigint FROM events")
            .fetch_one(&pool)
            .await?;
    let scan = t1.elapsed();
    pool.close().await;
    if count as usize != n {
        bail!("expected {n} events, found {count}");
    }
    eprintln!("triad-bench: rebuild: triad rebuild --all (PostgreSQL)");
    let (took, out) = rebuild(ctx, &db.url).await?;
    Ok(rows_for("PG", label, n, took, out, scan))
}

async fn sqlite_run(ctx: &Ctx, n: usize, label: &str) -> anyhow::Result<(Vec<Row>, String)> {
    use sqlx::Connection as _;
    let path = ctx.report_dir.join("rebuild.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = format!("sqlite://{}", path.display());
    // Creates and migrates the file (nothing to rebuild yet).
    rebuild(ctx, &store)
        .await
        .context("migrating the SQLite file")?;
    eprintln!("triad-bench: rebuild: INSERT {n} events into SQLite");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    let mut batch: Vec<[String; 7]> = Vec::new();
    let mut all = Vec::new();
    events(n, |f| {
        batch.push(f.map(str::to_string));
        if batch.len() == 500 {
            all.push(std::mem::take(&mut batch));
        }
    });
    all.push(batch);
    let mut tx = conn.begin().await?;
    for b in all.iter().filter(|b| !b.is_empty()) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) ",
        );
        q.push_values(b, |mut r, f| {
            r.push_bind(&f[0])
                .push_bind(&f[1])
                .push_bind(f[2].parse::<i64>().unwrap_or(0))
                .push_bind(&f[3])
                .push_bind(&f[4])
                .push_bind(&f[5])
                .push_bind(&f[6]);
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    let t1 = Instant::now();
    let (count, _bytes): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), sum(length(payload)) FROM events")
            .fetch_one(&mut conn)
            .await?;
    let scan = t1.elapsed();
    let unsequenced: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE position IS NULL")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    if count as usize != n || unsequenced != 0 {
        bail!("expected {n} sequenced events, found {count} ({unsequenced} unsequenced)");
    }
    eprintln!("triad-bench: rebuild: triad rebuild --all (SQLite)");
    let (took, out) = rebuild(ctx, &store).await?;
    Ok(rows_for("SQLite", label, n, took, out, scan))
}
