//! Section `relay`: the ERP relay's throughput and lag, against a tiny in-process ERP.

use crate::bids::{bearer, error_code, open_auctions, place_bid_body, Gql, STARTING_PRICE};
use crate::extra::Ctx;
use crate::report::{histogram, Row};
use crate::server::BenchDb;
use anyhow::bail;
use futures::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLOSE: &str = "mutation($id: ID!) { closeAuction(auctionId: $id) { status } }";

/// Per auction id: receive times (more than one = duplicate deliveries).
type Received = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

async fn erp(
    axum::extract::State(rx): axum::extract::State<Received>,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let at = Instant::now();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        let key = v["auctionId"]
            .as_str()
            .or(v["idempotencyKey"].as_str())
            .unwrap_or_default()
            .to_string();
        if let Ok(mut m) = rx.lock() {
            m.entry(key).or_default().push(at);
        }
    }
    axum::http::StatusCode::OK
}

pub async fn run(ctx: &Ctx, m: usize) -> Row {
    let name = format!("relay ({m} closes)");
    let db = match BenchDb::create(&ctx.admin_url).await {
        Ok(db) => db,
        Err(e) => return Row::failed(name, &e),
    };
    let row = run_on(ctx, &db, m, &name)
        .await
        .unwrap_or_else(|e| Row::failed(&name, &e));
    if let Err(e) = db.drop_db().await {
        eprintln!("triad-bench: dropping {}: {e:#}", db.name);
    }
    row
}

async fn run_on(ctx: &Ctx, db: &BenchDb, m: usize, name: &str) -> anyhow::Result<Row> {
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let erp_addr = listener.local_addr()?;
    let app = axum::Router::new()
        .fallback(axum::routing::post(erp))
        .with_state(received.clone());
    let erp_task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let srv = ctx
        .start(
            db,
            "server-relay",
            &[("TRIAD_ERP_URL", format!("http://{erp_addr}/erp"))],
        )
        .await?;
    let result = measure(&srv, &received, m, name).await;
    srv.stop().await;
    erp_task.abort();
    result
}

async fn measure(
    srv: &crate::server::ServerProcess,
    received: &Received,
    m: usize,
    name: &str,
) -> anyhow::Result<Row> {
    let gql = Gql::new(srv.addr)?;
    let auctions = open_auctions(&gql, m, 16).await?;
    let dealer = bearer("bench-relay-dealer", "dealer");
    for a in &auctions {
        let v = gql
            .post(&dealer, place_bid_body(a, STARTING_PRICE))
            .await
            .map_err(anyhow::Error::msg)?;
        if let Some(code) = error_code(&v) {
            bail!("placeBid failed ({code}): {v}");
        }
    }
    let seller = bearer("bench-seller", "seller");
    let mut errors = 0u64;
    let closed: Vec<(String, Option<Instant>)> = futures::stream::iter(auctions.iter().cloned())
        .map(|a| {
            let (gql, seller) = (gql.clone(), seller.clone());
            async move {
                let body = json!({ "query": CLOSE, "variables": { "id": a } }).to_string();
                let v = gql.post(&seller, body).await;
                let at = Instant::now();
                let ok = matches!(&v, Ok(v) if error_code(v).is_none());
                (a, ok.then_some(at))
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let closes: HashMap<String, Instant> = closed
        .into_iter()
        .filter_map(|(a, at)| {
            if at.is_none() {
                errors += 1;
            }
            Some(a).zip(at)
        })
        .collect();
    // Wait for every delivery (or 60 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = received
            .lock()
            .map(|r| closes.keys().all(|k| r.contains_key(k)))
            .unwrap_or(false);
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // late duplicates
    let r = received
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut h = histogram();
    let (mut lost, mut dup) = (0u64, 0u64);
    let mut times = Vec::new();
    for (a, closed_at) in &closes {
        match r.get(a) {
            None => lost += 1,
            Some(ts) => {
                dup += ts.len() as u64 - 1;
                let first = ts[0];
                times.push(first);
                // Receipt can precede the close response: record as 0.
                h.saturating_record(first.saturating_duration_since(*closed_at).as_micros() as u64);
            }
        }
    }
    times.sort();
    let mut row = Row::new(name);
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        let span = last.duration_since(*first).as_secs_f64();
        if span > 0.0 && times.len() > 1 {
            row.rate = Some((times.len() - 1) as f64 / span);
        }
        row.extra
            .insert("delivery_span_ms".into(), json!(span * 1000.0));
    }
    row.set_latency(&h);
    row.expected = Some(closes.len() as u64);
    row.lost = Some(lost);
    row.duplicated = Some(dup);
    row.error("CLOSE_FAILED", errors);
    Ok(row)
}
