//! Sections (1) and (2): concurrent dealers placing bids over GraphQL-over-HTTP.

use crate::report::{histogram, Row};
use crate::server::token;
use anyhow::{bail, Context as _};
use futures::{StreamExt, TryStreamExt};
use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const PLACE_BID: &str = "mutation($input: PlaceBidInput!) { placeBid(input: $input) { accepted auction { version highestBid { amountCents } } } }";
const OPEN_AUCTION: &str =
    "mutation($input: OpenAuctionInput!) { openAuction(input: $input) { id version } }";
pub const STARTING_PRICE: i64 = 1_000;

/// A GraphQL-over-HTTP client shared by all tasks (one pooled connection per in-flight call).
#[derive(Clone)]
pub struct Gql {
    http: reqwest::Client,
    url: String,
}

/// `Authorization: Bearer <token>` for `sub` with `role`.
pub fn bearer(sub: &str, role: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {}", token(sub, role))).expect("token is ASCII")
}

impl Gql {
    pub fn new(addr: SocketAddr) -> anyhow::Result<Gql> {
        Ok(Gql {
            http: reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(300))
                .timeout(Duration::from_secs(60))
                .build()?,
            url: format!("http://{addr}/graphql"),
        })
    }

    /// POSTs a request body; `Err` only for transport failures and non-JSON answers.
    pub async fn post(&self, auth: &HeaderValue, body: String) -> Result<Value, String> {
        let resp = self
            .http
            .post(&self.url)
            .header(AUTHORIZATION, auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{e}"))?;
        let bytes = resp.bytes().await.map_err(|e| format!("{e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("bad JSON: {e}"))
    }
}

/// The request body for placeBid (the document is plain ASCII without quotes or escapes).
pub fn place_bid_body(auction: &str, amount: i64) -> String {
    format!(
        r#"{{"query":"{PLACE_BID}","variables":{{"input":{{"auctionId":"{auction}","amountCents":{amount}}}}}}}"#
    )
}

/// The first error's `extensions.code` (or a stand-in) when the response has errors.
pub fn error_code(v: &Value) -> Option<&str> {
    let e = v.get("errors")?.get(0)?;
    Some(e["extensions"]["code"].as_str().unwrap_or("NO_CODE"))
}

/// Opens `n` auctions as one seller (`concurrency` at a time); returns their ids.
pub async fn open_auctions(gql: &Gql, n: usize, concurrency: usize) -> anyhow::Result<Vec<String>> {
    let seller = bearer("bench-seller", "seller");
    let ends_at = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    futures::stream::iter(0..n)
        .map(|i| {
            let body = serde_json::json!({
                "query": OPEN_AUCTION,
                "variables": { "input": {
                    "title": format!("Bench car {i}"),
                    "startingPriceCents": STARTING_PRICE,
                    "minIncrementCents": 1,
                    "reservePriceCents": 0,
                    "endsAt": ends_at,
                } }
            })
            .to_string();
            let (gql, seller) = (gql.clone(), seller.clone());
            async move {
                let v = gql.post(&seller, body).await.map_err(anyhow::Error::msg)?;
                match v["data"]["openAuction"]["id"].as_str() {
                    Some(id) => Ok(id.to_string()),
                    None => bail!("openAuction failed: {v}"),
                }
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
        .context("opening auctions")
}

/// What one dealer task saw.
struct TaskStats {
    hist: hdrhistogram::Histogram<u64>,
    accepted: u64,
    too_low: u64,
    errors: BTreeMap<String, u64>,
    first_errors: Vec<String>,
}

/// "at least N cents" in a BID_TOO_LOW message.
fn minimum_from(message: &str) -> Option<i64> {
    let rest = &message[message.find("at least ")? + "at least ".len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// `dealers` tasks bid for `duration`, each on a random auction of `auctions`.
pub async fn run(
    section: &str,
    gql: &Gql,
    auctions: Vec<String>,
    dealers: usize,
    duration: Duration,
) -> anyhow::Result<Row> {
    let auctions = Arc::new(auctions);
    let highest: Arc<Vec<AtomicI64>> = Arc::new(
        (0..auctions.len())
            .map(|_| AtomicI64::new(STARTING_PRICE - 1))
            .collect(),
    );
    let client_cpu0 = crate::sys::cpu_ticks(std::process::id());
    let start = Instant::now();
    let deadline = start + duration;
    let mut handles = Vec::with_capacity(dealers);
    for d in 0..dealers {
        let (gql, auctions, highest) = (gql.clone(), auctions.clone(), highest.clone());
        let auth = bearer(&format!("bench-dealer-{d}"), "dealer");
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::from_entropy();
            let mut s = TaskStats {
                hist: histogram(),
                accepted: 0,
                too_low: 0,
                errors: BTreeMap::new(),
                first_errors: Vec::new(),
            };
            while Instant::now() < deadline {
                let a = if auctions.len() == 1 {
                    0
                } else {
                    rng.gen_range(0..auctions.len())
                };
                let amount = highest[a].load(Ordering::Relaxed) + 1 + rng.gen_range(0..50);
                let body = place_bid_body(&auctions[a], amount);
                let t0 = Instant::now();
                let reply = gql.post(&auth, body).await;
                s.hist.saturating_record(t0.elapsed().as_micros() as u64);
                match reply {
                    Err(e) => {
                        *s.errors.entry("TRANSPORT".into()).or_default() += 1;
                        if s.first_errors.len() < 3 {
                            s.first_errors.push(e);
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(v) => match error_code(&v) {
                        Some("BID_TOO_LOW") => {
                            s.too_low += 1;
                            if let Some(min) =
                                v["errors"][0]["message"].as_str().and_then(minimum_from)
                            {
                                highest[a].fetch_max(min - 1, Ordering::Relaxed);
                            }
                        }
                        Some(code) => {
                            *s.errors.entry(code.to_string()).or_default() += 1;
                            if s.first_errors.len() < 3 {
                                s.first_errors.push(v["errors"][0].to_string());
                            }
                        }
                        None => {
                            let bid = &v["data"]["placeBid"];
                            if bid["accepted"].as_bool() == Some(true) {
                                s.accepted += 1;
                            } else {
                                *s.errors.entry("NOT_ACCEPTED".into()).or_default() += 1;
                            }
                            if let Some(h) = bid["auction"]["highestBid"]["amountCents"].as_i64() {
                                highest[a].fetch_max(h, Ordering::Relaxed);
                            }
                        }
                    },
                }
            }
            s
        }));
    }
    let mut hist = histogram();
    let mut row = Row::new(section);
    let (mut accepted, mut too_low) = (0u64, 0u64);
    let mut samples: Vec<String> = Vec::new();
    for h in handles {
        let s = h.await.context("dealer task")?;
        hist.add(&s.hist).expect("same bounds");
        accepted += s.accepted;
        too_low += s.too_low;
        for (k, v) in s.errors {
            row.error(k, v);
        }
        samples.extend(s.first_errors);
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let (Some(a), Some(b)) = (client_cpu0, crate::sys::cpu_ticks(std::process::id())) {
        let secs = b.saturating_sub(a) as f64 / crate::sys::clock_ticks_per_sec() as f64;
        row.extra
            .insert("client_cpu_pct".into(), (100.0 * secs / elapsed).into());
    }
    let decided = accepted + too_low;
    row.rate = Some(decided as f64 / elapsed);
    row.accepted = Some(accepted as f64 / elapsed);
    row.set_latency(&hist);
    let top: i64 = highest
        .iter()
        .map(|h| h.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    for (k, v) in [
        ("auctions", serde_json::json!(auctions.len())),
        ("dealers", serde_json::json!(dealers)),
        ("elapsed_s", serde_json::json!(elapsed)),
        ("requests", serde_json::json!(hist.len())),
        ("accepted", serde_json::json!(accepted)),
        ("bid_too_low", serde_json::json!(too_low)),
        ("highest_seen_cents", serde_json::json!(top)),
        (
            "error_samples",
            serde_json::json!(samples.iter().take(5).collect::<Vec<_>>()),
        ),
    ] {
        row.extra.insert(k.into(), v);
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_minimum_and_body() {
        assert_eq!(
            super::minimum_from("bid of 5 cents is too low: at least 1234 cents required"),
            Some(1234)
        );
        let v: serde_json::Value = serde_json::from_str(&super::place_bid_body("a-1", 7)).unwrap();
        assert_eq!(v["variables"]["input"]["amountCents"], 7);
        assert_eq!(v["query"], super::PLACE_BID);
    }
}
