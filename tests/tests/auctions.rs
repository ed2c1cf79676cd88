//! The auction slice end to end: real server, real HTTP and WebSocket, PostgreSQL and SQLite.

use rand::seq::SliceRandom;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use triad_domain::auction::{Auction, AuctionEvent};
use triad_domain::Role;
use triad_eventstore::store::LogFilter;
use triad_tests::gql::{open_auction, place_bid};
use triad_tests::ws::{self, Frame};
use triad_tests::{eventually, start_server, token, Backend, Client, TestDb};

const AUCTION_QUERY: &str = "query($id: ID!) { auction(id: $id) { id status version bidCount highestBid { amountCents bidderId } endsAt leaderboard(top: 100) { rank bidderId amountCents } } }";
const BID_PLACED: &str = "subscription($id: ID!, $after: Int) { bidPlaced(auctionId: $id, after: $after) { auctionId amountCents bidderId position placedAt } }";

fn dealer(client: &Client, n: usize) -> Client {
    client.with_token(Some(token(&format!("dealer-{n}"), Role::Dealer)))
}

/// Waits until the read model shows `version` for the auction, and returns it.
async fn read_model(client: &Client, id: &str, version: i64) -> Value {
    eventually(10, "the read model to catch up", || async {
        let r = client.query(AUCTION_QUERY, json!({ "id": id })).await;
        let a = r.ok()["auction"].clone();
        (a["version"].as_i64() == Some(version)).then_some(a)
    })
    .await
}

async fn bid_flow(backend: Backend) {
    let db = TestDb::create(backend).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
    let id = open_auction(&seller, 1_000, 100, 1_500, 3_600).await;

    let r = place_bid(&dealer(&anon, 1), &id, 1_000, Some("b1")).await;
    let d = r.ok()["placeBid"].clone();
    assert_eq!(d["accepted"], true);
    assert_eq!(
        d["auction"]["highestBid"],
        json!({ "amountCents": 1_000, "bidderId": "dealer-1" })
    );
    assert_eq!(d["auction"]["version"], 2);
    assert_eq!(d["auction"]["status"], "OPEN");

    let r = place_bid(&dealer(&anon, 2), &id, 1_050, None).await;
    assert_eq!(r.code(), Some("BID_TOO_LOW"));
    let r = place_bid(&dealer(&anon, 2), &id, 1_100, None).await;
    assert_eq!(r.ok()["placeBid"]["auction"]["version"], 3);
    let r = place_bid(&seller, &id, 5_000, None).await;
    assert_eq!(r.code(), Some("FORBIDDEN"), "a seller token cannot bid");
    let seller_as_dealer = anon.with_token(Some(token("seller-1", Role::Dealer)));
    assert_eq!(
        place_bid(&seller_as_dealer, &id, 5_000, None).await.code(),
        Some("OWN_AUCTION")
    );

    // Queries read the projected model, including the leaderboard.
    let a = read_model(&anon, &id, 3).await;
    assert_eq!(
        a["highestBid"],
        json!({ "amountCents": 1_100, "bidderId": "dealer-2" })
    );
    assert_eq!(a["bidCount"], 2);
    assert_eq!(
        a["leaderboard"],
        json!([{ "rank": 1, "bidderId": "dealer-2", "amountCents": 1_100 }, { "rank": 2, "bidderId": "dealer-1", "amountCents": 1_000 }])
    );
    let list = anon
        .query("{ auctions(status: OPEN, first: 10) { edges { cursor node { id } } pageInfo { hasNextPage } } }", json!({}))
        .await;
    assert_eq!(list.ok()["auctions"]["edges"][0]["node"]["id"], id.as_str());

    // Close: SOLD, because 1,100 meets the 1,500 reserve? No: it does not, so UNSOLD.
    let other_seller = anon.with_token(Some(token("seller-2", Role::Seller)));
    let r = other_seller
        .query(
            "mutation($id: ID!) { closeAuction(auctionId: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(r.code(), Some("FORBIDDEN"));
    let r = seller
        .query(
            "mutation($id: ID!) { closeAuction(auctionId: $id) { status version } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        r.ok()["closeAuction"],
        json!({ "status": "UNSOLD", "version": 4 })
    );
    assert_eq!(
        place_bid(&dealer(&anon, 1), &id, 9_000, None).await.code(),
        Some("AUCTION_CLOSED")
    );

    // A second auction that meets its reserve is SOLD to the highest bidder.
    let id2 = open_auction(&seller, 1_000, 100, 1_000, 3_600).await;
    place_bid(&dealer(&anon, 3), &id2, 2_000, None).await.ok();
    let r = seller
        .query(
            "mutation($id: ID!) { closeAuction(auctionId: $id) { status winnerId } }",
            json!({ "id": id2 }),
        )
        .await;
    assert_eq!(
        r.ok()["closeAuction"],
        json!({ "status": "SOLD", "winnerId": "dealer-3" })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bid_flow() {
    bid_flow(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_bid_flow() {
    bid_flow(Backend::Sqlite).await;
}

/// 200 dealers bid on one auction at once, each a distinct multiple of the increment.
async fn concurrent_dealers(backend: Backend) {
    const DEALERS: usize = 200;
    const START: i64 = 10_000;
    const INC: i64 = 100;
    let db = TestDb::create(backend).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
    let id = open_auction(&seller, START, INC, 0, 3_600).await;

    let mut steps: Vec<i64> = (0..DEALERS as i64).collect();
    steps.shuffle(&mut rand::thread_rng());
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(DEALERS));
    let mut tasks = vec![];
    for (n, step) in steps.into_iter().enumerate() {
        let client = dealer(&anon, n);
        let id = id.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let amount = START + step * INC;
            (
                amount,
                place_bid(&client, &id, amount, Some(&format!("c{n}"))).await,
            )
        }));
    }
    let mut accepted = vec![];
    let mut rejected = vec![];
    for t in tasks {
        let (amount, reply) = t.await.unwrap();
        match reply.code() {
            None => accepted.push(amount),
            Some("BID_TOO_LOW") => rejected.push(amount),
            Some(other) => panic!("bid of {amount} lost to {other}: {}", reply.body),
        }
    }
    let top = START + (DEALERS as i64 - 1) * INC;
    assert!(
        accepted.contains(&top),
        "the largest bid is always valid and must win"
    );
    let max_accepted = *accepted.iter().max().unwrap();
    for r in &rejected {
        assert!(
            *r < max_accepted,
            "rejected {r} although nothing higher was accepted"
        );
    }

    // In log order, accepted amounts strictly increase by at least the increment.
    triad_tests::settled(&server.store).await;
    let log = server
        .store
        .read(
            1,
            10_000,
            &LogFilter {
                event_types: vec!["BidPlaced".into()],
                ..LogFilter::aggregate("Auction", &id)
            },
        )
        .await
        .unwrap();
    let in_log: Vec<i64> = log
        .iter()
        .map(|e| e.payload["BidPlaced"]["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(in_log.len(), accepted.len(), "one event per accepted bid");
    assert!(
        in_log.windows(2).all(|w| w[1] >= w[0] + INC),
        "strictly increasing by the increment: {in_log:?}"
    );
    assert_eq!(*in_log.last().unwrap(), top);

    // The read model equals a fresh replay of the log.
    let all = server
        .store
        .read(1, 10_000, &LogFilter::aggregate("Auction", &id))
        .await
        .unwrap();
    let mut replayed = Auction::default();
    let mut best: HashMap<String, i64> = HashMap::new();
    for e in &all {
        let event: AuctionEvent = e.decode().unwrap();
        if let AuctionEvent::BidPlaced { bidder, amount, .. } = &event {
            let b = best.entry(bidder.to_string()).or_default();
            *b = (*b).max(amount.get());
        }
        cqrs_es::Aggregate::apply(&mut replayed, event);
    }
    let view = read_model(&anon, &id, all.len() as i64).await;
    let highest = replayed.highest.clone().unwrap();
    assert_eq!(
        view["highestBid"],
        json!({ "amountCents": highest.amount.get(), "bidderId": highest.bidder.to_string() })
    );
    assert_eq!(view["bidCount"].as_u64(), Some(replayed.bid_count));
    // The read model keeps milliseconds.
    assert_eq!(
        view["endsAt"]
            .as_str()
            .map(|s| chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()),
        replayed.ends_at.map(|t| t.timestamp_millis())
    );
    let board: HashMap<String, i64> = view["leaderboard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["bidderId"].as_str().unwrap().to_string(),
                r["amountCents"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected_board: HashMap<String, i64> = {
        let mut v: Vec<_> = best.into_iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v.into_iter().take(100).collect()
    };
    assert_eq!(board, expected_board);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_200_concurrent_dealers() {
    concurrent_dealers(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_200_concurrent_dealers() {
    concurrent_dealers(Backend::Sqlite).await;
}

async fn duplicate_client_bid_id(backend: Backend) {
    let db = TestDb::create(backend).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
    let id = open_auction(&seller, 1_000, 100, 0, 3_600).await;
    let d = dealer(&anon, 1);
    // The same command sent ten times at once, as a client retrying on a bad network would.
    let replies =
        futures::future::join_all((0..10).map(|_| place_bid(&d, &id, 1_500, Some("retry-me"))))
            .await;
    let duplicates = replies
        .iter()
        .filter(|r| r.ok()["placeBid"]["duplicate"] == true)
        .count();
    assert_eq!(duplicates, 9);
    assert!(replies
        .iter()
        .all(|r| r.ok()["placeBid"]["accepted"] == true));
    triad_tests::settled(&server.store).await;
    let bids = server
        .store
        .read(
            1,
            100,
            &LogFilter {
                event_types: vec!["BidPlaced".into()],
                ..LogFilter::aggregate("Auction", &id)
            },
        )
        .await
        .unwrap();
    assert_eq!(bids.len(), 1, "one event for one clientBidId");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_duplicate_client_bid_id() {
    duplicate_client_bid_id(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_duplicate_client_bid_id() {
    duplicate_client_bid_id(Backend::Sqlite).await;
}

async fn subscription_in_order_and_resumable(backend: Backend) {
    let db = TestDb::create(backend).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
    let id = open_auction(&seller, 1_000, 100, 0, 3_600).await;
    let other = open_auction(&seller, 1_000, 100, 0, 3_600).await;
    let timeout = Duration::from_secs(10);

    let dealer_token = token("dealer-1", Role::Dealer);
    let mut watcher = ws::subscribe(
        server.addr,
        Some(&dealer_token),
        BID_PLACED,
        json!({ "id": id }),
    )
    .await
    .unwrap();
    let mut resumer = ws::subscribe(server.addr, None, BID_PLACED, json!({ "id": id }))
        .await
        .unwrap();
    // Give the subscriptions a moment to be registered before the first bid.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut amounts = vec![];
    for i in 0..30 {
        let amount = 1_000 + i * 100;
        place_bid(&dealer(&anon, (i % 3) as usize), &id, amount, None)
            .await
            .ok();
        place_bid(&dealer(&anon, 9), &other, amount, None)
            .await
            .ok(); // noise on another auction
        amounts.push(amount);
        if i == 9 {
            // The resumer drops after 10 events and misses the next ones.
            let first = resumer.take(10, timeout).await;
            let last_position = first.last().unwrap()["data"]["bidPlaced"]["position"]
                .as_i64()
                .unwrap();
            resumer.close().await;
            resumer = ws::subscribe(
                server.addr,
                None,
                BID_PLACED,
                json!({ "id": id, "after": last_position }),
            )
            .await
            .unwrap();
            let prefix: Vec<i64> = first
                .iter()
                .map(|v| v["data"]["bidPlaced"]["amountCents"].as_i64().unwrap())
                .collect();
            assert_eq!(prefix, amounts[..10]);
        }
    }
    let all = watcher.take(30, timeout).await;
    let got: Vec<i64> = all
        .iter()
        .map(|v| v["data"]["bidPlaced"]["amountCents"].as_i64().unwrap())
        .collect();
    assert_eq!(got, amounts, "every accepted bid, in order");
    let positions: Vec<i64> = all
        .iter()
        .map(|v| v["data"]["bidPlaced"]["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert!(all
        .iter()
        .all(|v| v["data"]["bidPlaced"]["auctionId"] == id.as_str()));

    let rest = resumer.take(20, timeout).await;
    let got: Vec<i64> = rest
        .iter()
        .map(|v| v["data"]["bidPlaced"]["amountCents"].as_i64().unwrap())
        .collect();
    assert_eq!(
        got,
        amounts[10..],
        "resume after reconnect: no gap, no duplicate"
    );
    // Nothing more arrives for either.
    assert!(watcher.next(Duration::from_millis(300)).await.is_none());
    assert!(resumer.next(Duration::from_millis(300)).await.is_none());

    // An unknown auction is a typed error, not a silent stream.
    let mut bad = ws::subscribe(
        server.addr,
        None,
        BID_PLACED,
        json!({ "id": "no-such-auction" }),
    )
    .await
    .unwrap();
    match bad.next(timeout).await {
        Some(Frame::Error(errors)) => assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND"),
        Some(Frame::Next(v)) => assert_eq!(v["errors"][0]["extensions"]["code"], "NOT_FOUND"),
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_subscription_in_order_and_resumable() {
    subscription_in_order_and_resumable(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_subscription_in_order_and_resumable() {
    subscription_in_order_and_resumable(Backend::Sqlite).await;
}

async fn bad_input_gets_typed_errors(backend: Backend) {
    let db = TestDb::create(backend).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
    let d = dealer(&anon, 1);
    let id = open_auction(&seller, 1_000, 100, 0, 3_600).await;

    assert_eq!(
        place_bid(&d, &id, -5, None).await.code(),
        Some("INVALID_INPUT")
    );
    assert_eq!(
        place_bid(&d, &id, 0, None).await.code(),
        Some("INVALID_INPUT")
    );
    assert_eq!(
        place_bid(&d, &id, 1_000_000_000_000_000, None).await.code(),
        Some("INVALID_INPUT")
    );
    let huge = d
        .raw(format!(r#"{{"query":"mutation {{ placeBid(input: {{auctionId: \"{id}\", amountCents: 99999999999999999999999}}) {{ accepted }} }}"}}"#))
        .await;
    assert_eq!(huge.code(), Some("INVALID_INPUT"), "{}", huge.body);
    assert_eq!(
        place_bid(&d, "no-such-auction", 5_000, None).await.code(),
        Some("NOT_FOUND")
    );
    assert_eq!(
        place_bid(&d, "bad id with spaces", 5_000, None)
            .await
            .code(),
        Some("NOT_FOUND")
    );
    assert_eq!(
        place_bid(&d, &id, 5_000, Some(&"x".repeat(500)))
            .await
            .code(),
        Some("INVALID_INPUT")
    );
    assert_eq!(
        place_bid(&anon, &id, 5_000, None).await.code(),
        Some("FORBIDDEN"),
        "no token, no bid"
    );

    let malformed = d.raw("{\"query\": ".into()).await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (400, Some("BAD_REQUEST"))
    );
    let not_graphql = d.raw(r#"{"query": "mutation { placeBid("}"#.into()).await;
    assert!(
        matches!(
            not_graphql.code(),
            Some("GRAPHQL_PARSE_FAILED" | "GRAPHQL_VALIDATION_FAILED")
        ),
        "{}",
        not_graphql.body
    );

    let expired = triad_api::auth::Auth::new(triad_tests::JWT_SECRET)
        .mint(
            &triad_domain::UserId::parse("dealer-1").unwrap(),
            Role::Dealer,
            Duration::from_secs(0),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = place_bid(&anon.with_token(Some(expired)), &id, 5_000, None).await;
    assert_eq!((r.status, r.code()), (401, Some("UNAUTHENTICATED")));
    let forged = place_bid(&anon.with_token(Some("not.a.jwt".into())), &id, 5_000, None).await;
    assert_eq!(
        (forged.status, forged.code()),
        (401, Some("UNAUTHENTICATED"))
    );

    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let r = seller
        .query(triad_tests::gql::OPEN_AUCTION, json!({ "input": { "title": "x", "startingPriceCents": 100, "minIncrementCents": 10, "reservePriceCents": 0, "endsAt": past } }))
        .await;
    assert_eq!(r.code(), Some("INVALID_INPUT"));
    let r = seller
        .query(triad_tests::gql::OPEN_AUCTION, json!({ "input": { "title": "x", "startingPriceCents": 100, "minIncrementCents": 10, "reservePriceCents": 0, "endsAt": "tomorrow" } }))
        .await;
    assert_eq!(r.code(), Some("INVALID_INPUT"));
    let r = seller
        .query(triad_tests::gql::OPEN_AUCTION, json!({ "input": { "title": "", "startingPriceCents": 100, "minIncrementCents": 0, "reservePriceCents": 0, "endsAt": "2099-01-01T00:00:00Z" } }))
        .await;
    assert_eq!(r.code(), Some("INVALID_INPUT"));

    // Nothing was written by any of the refused commands: only the opening event exists.
    triad_tests::settled(&server.store).await;
    let events = server.store.read_all(1, 100).await.unwrap();
    assert_eq!(events.len(), 1, "refused commands append nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bad_input_gets_typed_errors() {
    bad_input_gets_typed_errors(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_bad_input_gets_typed_errors() {
    bad_input_gets_typed_errors(Backend::Sqlite).await;
}

/// Data survives a restart, and the scheduler closes auctions whose end has passed (also
/// ones that ended while the server was down).
async fn restart_and_scheduler(backend: Backend) {
    let db = TestDb::create(backend).await;
    let (id, short) = {
        let server = start_server(&db).await;
        let anon = Client::new(server.addr, None);
        let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
        let id = open_auction(&seller, 1_000, 100, 0, 3_600).await;
        place_bid(&dealer(&anon, 1), &id, 1_200, None).await.ok();
        let short = open_auction(&seller, 1_000, 100, 0, 2).await;
        (id, short)
    };
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let a = read_model(&anon, &id, 2).await;
    assert_eq!(a["highestBid"]["amountCents"], 1_200);
    let closed = eventually(10, "the scheduler to close the expired auction", || async {
        let r = anon.query(AUCTION_QUERY, json!({ "id": short })).await;
        let a = r.ok()["auction"].clone();
        matches!(a["status"].as_str(), Some("SOLD" | "UNSOLD")).then_some(a)
    })
    .await;
    assert_eq!(closed["status"], "UNSOLD");
    // Bids after the end are refused.
    assert_eq!(
        place_bid(&dealer(&anon, 1), &short, 5_000, None)
            .await
            .code(),
        Some("AUCTION_CLOSED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_and_scheduler() {
    restart_and_scheduler(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restart_and_scheduler() {
    restart_and_scheduler(Backend::Sqlite).await;
}

/// A bid in the last two minutes pushes the end back by two minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_sniping_extends_over_http() {
    let db = TestDb::create(Backend::Sqlite).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
    let id = open_auction(&seller, 1_000, 100, 0, 60).await;
    let before = read_model(&anon, &id, 1).await["endsAt"]
        .as_str()
        .map(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap())
        .unwrap();
    let r = place_bid(&dealer(&anon, 1), &id, 1_000, None).await;
    let after = chrono::DateTime::parse_from_rfc3339(
        r.ok()["placeBid"]["auction"]["endsAt"].as_str().unwrap(),
    )
    .unwrap();
    // The read model keeps milliseconds; the command's answer is exact.
    let moved = (after - before).num_milliseconds();
    assert!((120_000..=120_001).contains(&moved), "moved by {moved} ms");
}

#[test]
fn schema_file_equals_triad_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/schema.graphql");
    let on_disk =
        std::fs::read_to_string(path).expect("schemas/schema.graphql exists (make schema)");
    assert_eq!(
        on_disk,
        triad_api::graphql::sdl(),
        "schemas/schema.graphql is stale: run `make schema`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let db = TestDb::create(Backend::Postgres).await;
    let server = start_server(&db).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["store"], "ok");
    let anon = Client::new(server.addr, None);
    let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
    let id = open_auction(&seller, 1_000, 100, 0, 3_600).await;
    place_bid(&dealer(&anon, 1), &id, 1_000, None).await.ok();
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("triad_bids_total"), "{text}");
    let graphiql = http
        .get(format!("{base}/graphql"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(graphiql.to_lowercase().contains("graphiql"));
}

/// Two replicas over one PostgreSQL: a watcher on one sees bids placed through the other,
/// and the shared read model applies every event once (not once per replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_log() {
    let db = TestDb::create(Backend::Postgres).await;
    let a = start_server(&db).await;
    let b = start_server(&db).await;
    let on_a = Client::new(a.addr, None);
    let seller = on_a.with_token(Some(token("seller-1", Role::Seller)));
    let id = open_auction(&seller, 1_000, 100, 0, 3_600).await;
    let mut watcher = ws::subscribe(b.addr, None, BID_PLACED, json!({ "id": id }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let on_b = Client::new(b.addr, None);
    for i in 0..20 {
        let via = if i % 2 == 0 { &on_a } else { &on_b };
        place_bid(&dealer(via, i), &id, 1_000 + i as i64 * 100, None)
            .await
            .ok();
    }
    let got = watcher.take(20, Duration::from_secs(10)).await;
    let amounts: Vec<i64> = got
        .iter()
        .map(|v| v["data"]["bidPlaced"]["amountCents"].as_i64().unwrap())
        .collect();
    assert_eq!(
        amounts,
        (0..20).map(|i| 1_000 + i * 100).collect::<Vec<_>>()
    );
    let view = read_model(&on_b, &id, 21).await;
    assert_eq!(
        view["bidCount"], 20,
        "each event applied once across replicas"
    );
    assert_eq!(view["leaderboard"].as_array().unwrap().len(), 20);
}

/// `triad audit TYPE/ID --as-of T` gives the state as it was at T.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_as_of_equals_the_state_at_that_time() {
    let db = TestDb::create(Backend::Sqlite).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
    let id = open_auction(&seller, 1_000, 100, 0, 3_600).await;
    place_bid(&dealer(&anon, 1), &id, 1_000, None).await.ok();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    place_bid(&dealer(&anon, 2), &id, 1_500, None).await.ok();
    triad_tests::settled(&server.store).await;
    let audit = |as_of| {
        let store = server.store.clone();
        let target = format!("Auction/{id}");
        async move {
            let mut out = Vec::new();
            triad_api::tools::audit_aggregate(
                &store,
                &target,
                as_of,
                triad_api::tools::Format::Json,
                &mut out,
            )
            .await
            .unwrap();
            let text = String::from_utf8(out).unwrap();
            let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
            (text.lines().count() - 1, last["state"].clone())
        }
    };
    let (events_then, then) = audit(Some(between)).await;
    assert_eq!(events_then, 2);
    assert_eq!(then["highest"]["amount"], 1_000);
    assert_eq!(then["highest"]["bidder"], "dealer-1");
    assert_eq!(then["bid_count"], 1);
    let (events_now, now) = audit(None).await;
    assert_eq!(events_now, 3);
    assert_eq!(now["highest"]["amount"], 1_500);
    // The same through GraphQL, for admins only.
    let q = "query($id: String!, $t: DateTime) { aggregateHistory(type: \"Auction\", id: $id, asOf: $t) { events { position eventType actorRole } state } }";
    let admin = anon.with_token(Some(token("admin-1", Role::Admin)));
    let r = admin
        .query(q, json!({ "id": id, "t": between.to_rfc3339() }))
        .await;
    let h = r.ok()["aggregateHistory"].clone();
    assert_eq!(h["events"].as_array().unwrap().len(), 2);
    assert_eq!(h["state"], then);
    let r = dealer(&anon, 1).query(q, json!({ "id": id })).await;
    assert_eq!(r.code(), Some("FORBIDDEN"));
}

/// schemas/events/ holds one JSON Schema per event type and version; the current ones equal
/// what the Rust types generate (`make schema` rewrites them).
#[test]
fn event_catalog_equals_the_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/events");
    let catalog = triad_domain::catalog::schemas();
    assert!(catalog.len() >= 20);
    for (aggregate, event_type, version, schema) in catalog {
        let path = dir
            .join(aggregate)
            .join(format!("{event_type}.v{version}.json"));
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} is missing: run `make schema`", path.display()));
        let on_disk: Value = serde_json::from_str(&on_disk).unwrap();
        assert_eq!(
            on_disk,
            schema,
            "{} is stale: run `make schema`",
            path.display()
        );
    }
    // Superseded versions stay documented beside the current one.
    assert!(dir.join("Auction/AuctionOpened.v1.json").exists());
}
