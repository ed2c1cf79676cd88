//! Section (4): N graphql-transport-ws subscribers of one auction, then bids, measuring
//! delivery latency, losses, duplicates, server CPU per delivery and server RSS per socket.

use crate::bids::{bearer, error_code, open_auctions, place_bid_body, Gql, STARTING_PRICE};
use crate::report::{histogram, Row};
use crate::sys;
use futures::{SinkExt, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const SUBSCRIPTION: &str = "subscription($id: ID!) { bidPlaced(auctionId: $id) { auctionId amountCents bidderId position placedAt } }";
/// Sockets per source address: socket i binds 127.0.0.(1 + i / SOCKETS_PER_SOURCE).
const SOCKETS_PER_SOURCE: usize = 20_000;
const CONNECTS_IN_FLIGHT: usize = 200;
const BIDS_PER_MODE: usize = 20;
const SPACING: Duration = Duration::from_millis(250);
/// A mode's collection ends this long after the last frame when deliveries are missing.
const QUIET: Duration = Duration::from_secs(3);

pub type Ws = WebSocketStream<TcpStream>;

/// What a subscriber saw: a `next` with an amount, or something else (`amount` < 0).
struct Delivery {
    sub: u32,
    at: Instant,
    amount: i64,
}
const ERROR_FRAME: i64 = -1;
const CLOSED: i64 = -2;
const COMPLETE: i64 = -3;
const NEXT_WITHOUT_AMOUNT: i64 = -4;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Spaced,
    Burst,
}

fn source_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::LOCALHOST) + (i / SOCKETS_PER_SOURCE) as u32)
}

/// `amountCents` of a `next` frame without building a JSON tree (frames are small and many).
fn amount_of(frame: &str) -> Option<i64> {
    const KEY: &str = "\"amountCents\":";
    let rest = frame[frame.find(KEY)? + KEY.len()..].trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit() && c != '-')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

pub async fn connect(
    i: usize,
    server: SocketAddr,
    init: &str,
    subscribe: &str,
) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .set_reuseaddr(true)
        .map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    let source = SocketAddr::new(source_address(i).into(), 0);
    socket
        .bind(source)
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect from {source}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut request = format!("ws://{server}/graphql/ws")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header value"),
    );
    // Small reads only: the default 128 KiB read buffer per socket would dominate client memory.
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    ws.send(Message::text(init.to_string()))
        .await
        .map_err(|e| format!("connection_init: {e}"))?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| "no connection_ack within 30 s".to_string())?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value =
                    serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
                match v["type"].as_str() {
                    Some("connection_ack") => break,
                    Some("ping") => {
                        let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
                    }
                    _ => return Err(format!("expected connection_ack, got {v}")),
                }
            }
            Some(Ok(Message::Close(f))) => return Err(format!("closed before ack: {f:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("before ack: {e}")),
            None => return Err("closed before ack".into()),
        }
    }
    ws.send(Message::text(subscribe.to_string()))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    Ok(ws)
}

/// One subscriber: reads frames, answers pings, reports `next` amounts with their arrival.
async fn subscriber(
    sub: u32,
    mut ws: Ws,
    tx: mpsc::UnboundedSender<Delivery>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return;
            }
            msg = ws.next() => {
                let at = Instant::now();
                let amount = match msg {
                    Some(Ok(Message::Text(t))) => {
                        let t = t.as_str();
                        match amount_of(t) {
                            Some(a) => a,
                            None => {
                                let v: serde_json::Value =
                                    serde_json::from_str(t).unwrap_or_default();
                                match v["type"].as_str() {
                                    Some("ping") => {
                                        let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
                                        continue;
                                    }
                                    Some("next") => NEXT_WITHOUT_AMOUNT,
                                    Some("error") => ERROR_FRAME,
                                    Some("complete") => COMPLETE,
                                    _ => continue,
                                }
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => CLOSED,
                    Some(Ok(_)) => continue,
                };
                let _ = tx.send(Delivery { sub, at, amount });
                if amount == CLOSED {
                    return;
                }
            }
        }
    }
}

/// Waits until the server has been (nearly) idle for two consecutive 250 ms windows.
async fn settle(pid: u32, min: Duration, max: Duration) -> Duration {
    let start = Instant::now();
    tokio::time::sleep(min).await;
    let threshold = (sys::clock_ticks_per_sec() / 40).max(1); // 10% of a core over 250 ms
    let mut last = sys::cpu_ticks(pid).unwrap_or(0);
    let mut quiet = 0;
    while start.elapsed() < max {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = sys::cpu_ticks(pid).unwrap_or(0);
        if now.saturating_sub(last) <= threshold {
            quiet += 1;
            if quiet >= 2 {
                break;
            }
        } else {
            quiet = 0;
        }
        last = now;
    }
    start.elapsed()
}

pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs both modes for `n` subscribers; always returns two rows.
pub async fn run(gql: &Gql, server: SocketAddr, pid: u32, n: usize) -> Vec<Row> {
    let label = |m: Mode| {
        format!(
            "fan-out {} {}",
            thousands(n),
            format!("{m:?}").to_lowercase()
        )
    };
    match run_inner(gql, server, pid, n).await {
        Ok(rows) => rows,
        Err(e) => vec![
            Row::failed(label(Mode::Spaced), &e),
            Row::failed(label(Mode::Burst), &e),
        ],
    }
}

async fn run_inner(gql: &Gql, server: SocketAddr, pid: u32, n: usize) -> anyhow::Result<Vec<Row>> {
    let auction = open_auctions(gql, 1, 1).await?.remove(0);
    let rss_before = sys::rss_kib(pid);
    let dealer = bearer("bench-fanout-dealer", "dealer");
    let watcher = crate::server::token("bench-watcher", "dealer");
    let init = serde_json::json!({
        "type": "connection_init",
        "payload": { "Authorization": format!("Bearer {watcher}") }
    })
    .to_string();
    let subscribe = serde_json::json!({
        "id": "1",
        "type": "subscribe",
        "payload": { "query": SUBSCRIPTION, "variables": { "id": auction } }
    })
    .to_string();
    let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
    let (stop_tx, stop_rx) = watch::channel(false);

    let connect_start = Instant::now();
    let results: Vec<Result<JoinHandle<()>, String>> = futures::stream::iter(0..n)
        .map(|i| {
            let (init, subscribe) = (&init, &subscribe);
            let (tx, stop_rx) = (tx.clone(), stop_rx.clone());
            async move {
                let ws = connect(i, server, init, subscribe).await?;
                Ok(tokio::spawn(subscriber(i as u32, ws, tx, stop_rx)))
            }
        })
        .buffer_unordered(CONNECTS_IN_FLIGHT)
        .collect()
        .await;
    drop(tx);
    let connect_secs = connect_start.elapsed().as_secs_f64();
    let mut handles = Vec::with_capacity(n);
    let mut connect_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut connect_error_sample = None;
    for r in results {
        match r {
            Ok(h) => handles.push(h),
            Err(e) => {
                let kind = e.split(':').next().unwrap_or("connect").to_string();
                *connect_errors.entry(format!("connect/{kind}")).or_default() += 1;
                connect_error_sample.get_or_insert(e);
            }
        }
    }
    let settled = settle(pid, Duration::from_secs(1), Duration::from_secs(30)).await;
    let rss_after = sys::rss_kib(pid);

    let mut rows = Vec::new();
    let mut next_amount = STARTING_PRICE;
    for mode in [Mode::Spaced, Mode::Burst] {
        let mut row = Row::new(format!(
            "fan-out {} {}",
            thousands(n),
            format!("{mode:?}").to_lowercase()
        ));
        row.rss_before_kib = rss_before;
        row.rss_after_kib = rss_after;
        if let (Some(a), Some(b)) = (rss_before, rss_after) {
            row.rss_per_conn_kib = Some((b as f64 - a as f64) / n as f64);
        }
        for (k, v) in &connect_errors {
            row.error(k.clone(), *v);
        }
        row.extra.insert("subscribers".into(), n.into());
        row.extra.insert("connected".into(), handles.len().into());
        row.extra.insert("connect_s".into(), connect_secs.into());
        row.extra
            .insert("settle_s".into(), settled.as_secs_f64().into());
        if let Some(e) = &connect_error_sample {
            row.extra
                .insert("connect_error_sample".into(), e.clone().into());
        }
        measure_mode(
            mode,
            n,
            gql,
            &dealer,
            &auction,
            &mut next_amount,
            &mut rx,
            pid,
            &mut row,
        )
        .await;
        rows.push(row);
    }

    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(15), futures::future::join_all(handles)).await;
    drop(rx);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(rows)
}

#[allow(clippy::too_many_arguments)]
async fn measure_mode(
    mode: Mode,
    n: usize,
    gql: &Gql,
    dealer: &reqwest::header::HeaderValue,
    auction: &str,
    next_amount: &mut i64,
    rx: &mut mpsc::UnboundedReceiver<Delivery>,
    pid: u32,
    row: &mut Row,
) {
    // Frames from an earlier mode that are still queued are not this mode's.
    let mut stray = 0u64;
    while rx.try_recv().is_ok() {
        stray += 1;
    }
    let tck = sys::clock_ticks_per_sec();
    let cpu0 = sys::cpu_ticks(pid);
    let client_cpu0 = sys::cpu_ticks(std::process::id());
    // amount -> (bid index, t_accepted)
    let mut bids: HashMap<i64, (usize, Instant)> = HashMap::new();
    let start = Instant::now();
    let mut bid_hist = histogram();
    for k in 0..BIDS_PER_MODE {
        if let Mode::Spaced = mode {
            tokio::time::sleep_until((start + SPACING * k as u32).into()).await;
        }
        let amount = *next_amount;
        let t0 = Instant::now();
        let reply = gql.post(dealer, place_bid_body(auction, amount)).await;
        let accepted_at = Instant::now();
        bid_hist.saturating_record((accepted_at - t0).as_micros() as u64);
        match reply {
            Err(_) => row.error("bid/TRANSPORT", 1),
            Ok(v) => match error_code(&v) {
                Some(code) => row.error(format!("bid/{code}"), 1),
                None => {
                    bids.insert(amount, (k, accepted_at));
                    *next_amount += 1;
                }
            },
        }
    }
    let last_bid = Instant::now();

    let expected = (n * BIDS_PER_MODE) as u64;
    let mut seen = vec![0u32; n]; // bit k: bid k arrived at this subscriber
    let (mut unique, mut duplicated) = (0u64, 0u64);
    let mut others: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut hist = histogram();
    let mut last_delivery = last_bid;
    let hard_stop = last_bid + Duration::from_secs(120);
    while unique < expected && Instant::now() < hard_stop {
        let d = match tokio::time::timeout(QUIET, rx.recv()).await {
            Ok(Some(d)) => d,
            _ => break,
        };
        match d.amount {
            ERROR_FRAME => *others.entry("sub/error-frame").or_default() += 1,
            CLOSED => *others.entry("sub/closed").or_default() += 1,
            COMPLETE => *others.entry("sub/complete").or_default() += 1,
            NEXT_WITHOUT_AMOUNT => *others.entry("sub/next-without-data").or_default() += 1,
            amount => match bids.get(&amount) {
                None => stray += 1,
                Some(&(k, t_accepted)) => {
                    let bit = 1u32 << k;
                    let s = &mut seen[d.sub as usize];
                    if *s & bit != 0 {
                        duplicated += 1;
                    } else {
                        *s |= bit;
                        unique += 1;
                        last_delivery = d.at;
                        let lat = d.at.saturating_duration_since(t_accepted);
                        hist.saturating_record(lat.as_micros() as u64);
                    }
                }
            },
        }
    }
    let cpu1 = sys::cpu_ticks(pid);
    if let (Some(a), Some(b)) = (client_cpu0, sys::cpu_ticks(std::process::id())) {
        let ms = b.saturating_sub(a) as f64 * 1e3 / tck as f64;
        row.extra.insert("client_cpu_ms".into(), ms.into());
    }
    for (k, v) in others {
        row.error(k, v);
    }
    row.expected = Some(expected);
    row.lost = Some(expected.saturating_sub(unique));
    row.duplicated = Some(duplicated);
    row.set_latency(&hist);
    let span = last_delivery.saturating_duration_since(start).as_secs_f64();
    if span > 0.0 {
        row.rate = Some(unique as f64 / span);
    }
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        if unique > 0 {
            let us = (b.saturating_sub(a)) as f64 * 1e6 / tck as f64;
            row.cpu_us_per_delivery = Some(us / unique as f64);
            row.extra
                .insert("server_cpu_ms".into(), (us / 1000.0).into());
        }
    }
    row.extra.insert("bids_accepted".into(), bids.len().into());
    row.extra.insert(
        "bid_p50_ms".into(),
        (bid_hist.value_at_quantile(0.5) as f64 / 1000.0).into(),
    );
    row.extra.insert("received_unique".into(), unique.into());
    row.extra.insert("stray_frames".into(), stray.into());
    row.extra.insert(
        "last_delivery_after_last_bid_ms".into(),
        (last_delivery
            .saturating_duration_since(last_bid)
            .as_secs_f64()
            * 1000.0)
            .into(),
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn amounts_and_sources() {
        let frame = r#"{"type":"next","id":"1","payload":{"data":{"bidPlaced":{"auctionId":"x","amountCents":1234,"bidderId":"d"}}}}"#;
        assert_eq!(super::amount_of(frame), Some(1234));
        assert_eq!(super::amount_of(r#"{"type":"ping"}"#), None);
        assert_eq!(super::source_address(0).to_string(), "127.0.0.1");
        assert_eq!(super::source_address(19_999).to_string(), "127.0.0.1");
        assert_eq!(super::source_address(20_000).to_string(), "127.0.0.2");
        assert_eq!(super::source_address(45_000).to_string(), "127.0.0.3");
        assert_eq!(super::thousands(10_000), "10,000");
        assert_eq!(super::thousands(200), "200");
    }
}
