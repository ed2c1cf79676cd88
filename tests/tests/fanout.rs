//! The fan-out engine: groups, shapes, authorization, slow consumers, resume, protocols.

use serde_json::{json, Value};
use std::time::Duration;
use triad_api::ws::WsConfig;
use triad_domain::auction::AuctionCommand;
use triad_domain::{Actor, Cents, Role, UserId};
use triad_eventstore::CommandContext;
use triad_tests::gql::{open_auction, place_bid};
use triad_tests::ws::{self, Conn};
use triad_tests::{eventually, start_server, start_server_with, token, Backend, Client, TestDb};

const T: Duration = Duration::from_secs(10);
const AMOUNTS: &str = "subscription($id: ID!) { bidPlaced(auctionId: $id) { amountCents } }";

async fn setup(db: &TestDb) -> (std::sync::Arc<triad_api::Server>, Client, String) {
    let server = start_server(db).await;
    let anon = Client::new(server.addr, None);
    let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
    let id = open_auction(&seller, 1_000, 1, 0, 3_600).await;
    (server, anon, id)
}

/// Bids straight through the executor (the HTTP path is covered elsewhere; this is faster).
async fn bid(server: &triad_api::Server, auction: &str, dealer: &str, amount: i64) {
    let actor = Actor {
        sub: UserId::parse(dealer).unwrap(),
        role: Role::Dealer,
    };
    let cmd = AuctionCommand::PlaceBid {
        bidder: actor.sub.clone(),
        amount: Cents::parse("a", amount).unwrap(),
        client_bid_id: None,
        now: chrono::Utc::now(),
    };
    server
        .auctions
        .execute(auction, cmd, CommandContext::new(actor, "test"))
        .await
        .unwrap();
}

async fn wait_members(server: &triad_api::Server, groups: usize, members: usize) {
    eventually(10, "subscriptions to register", || async {
        let (g, m) = server.engine.stats();
        (g == groups && m == members).then_some(())
    })
    .await;
}

fn amounts(frames: &[Value]) -> Vec<i64> {
    frames
        .iter()
        .map(|f| f["data"]["bidPlaced"]["amountCents"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_of_a_group_gets_every_event_once_in_order() {
    let db = TestDb::create(Backend::Postgres).await;
    let (server, _, id) = setup(&db).await;
    let mut subs = vec![];
    for i in 0..30 {
        // Formatting differences do not split the group.
        let doc = if i % 2 == 0 {
            AMOUNTS.to_string()
        } else {
            AMOUNTS.replace(' ', "\n  ")
        };
        subs.push(
            ws::subscribe(server.addr, None, &doc, json!({ "id": id }))
                .await
                .unwrap(),
        );
    }
    wait_members(&server, 1, 30).await;
    let expected: Vec<i64> = (0..25).map(|i| 1_000 + i * 10).collect();
    for (i, amount) in expected.iter().enumerate() {
        bid(&server, &id, &format!("dealer-{}", i % 4), *amount).await;
    }
    for sub in &mut subs {
        assert_eq!(amounts(&sub.take(25, T).await), expected);
        assert!(
            sub.next(Duration::from_millis(200)).await.is_none(),
            "no duplicates"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_selections_and_variables_get_their_own_shape() {
    let db = TestDb::create(Backend::Sqlite).await;
    let (server, anon, id) = setup(&db).await;
    let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
    let other = open_auction(&seller, 1_000, 1, 0, 3_600).await;
    let mut amounts_only = ws::subscribe(server.addr, None, AMOUNTS, json!({ "id": id }))
        .await
        .unwrap();
    let who_where = "subscription($id: ID!) { bidPlaced(auctionId: $id) { bidderId position } }";
    let mut bidders = ws::subscribe(server.addr, None, who_where, json!({ "id": id }))
        .await
        .unwrap();
    let mut elsewhere = ws::subscribe(server.addr, None, AMOUNTS, json!({ "id": other }))
        .await
        .unwrap();
    wait_members(&server, 3, 3).await;

    bid(&server, &id, "dealer-1", 1_500).await;
    let a = amounts_only.take(1, T).await;
    assert_eq!(
        a[0]["data"],
        json!({ "bidPlaced": { "amountCents": 1_500 } })
    );
    let b = bidders.take(1, T).await;
    let fields: Vec<&String> = b[0]["data"]["bidPlaced"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(fields, ["bidderId", "position"]);
    assert_eq!(b[0]["data"]["bidPlaced"]["bidderId"], "dealer-1");
    assert!(
        elsewhere.next(Duration::from_millis(300)).await.is_none(),
        "another auction's subscriber sees nothing"
    );

    bid(&server, &other, "dealer-2", 2_000).await;
    assert_eq!(amounts(&elsewhere.take(1, T).await), [2_000]);
    assert!(amounts_only
        .next(Duration::from_millis(300))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_never_gets_an_event_it_may_not_see() {
    let db = TestDb::create(Backend::Postgres).await;
    let (server, _, id) = setup(&db).await;
    let outbid =
        "subscription($id: ID!) { outbid(auctionId: $id) { yourAmountCents amountCents } }";
    let (ta, tb, tc) = (
        token("dealer-a", Role::Dealer),
        token("dealer-b", Role::Dealer),
        token("dealer-c", Role::Dealer),
    );
    let mut a = ws::subscribe(server.addr, Some(&ta), outbid, json!({ "id": id }))
        .await
        .unwrap();
    let mut a2 = ws::subscribe(server.addr, Some(&ta), outbid, json!({ "id": id }))
        .await
        .unwrap();
    let mut b = ws::subscribe(server.addr, Some(&tb), outbid, json!({ "id": id }))
        .await
        .unwrap();
    let mut c = ws::subscribe(server.addr, Some(&tc), outbid, json!({ "id": id }))
        .await
        .unwrap();
    // One group per dealer: A's two connections share one.
    wait_members(&server, 3, 4).await;

    bid(&server, &id, "dealer-a", 1_000).await;
    bid(&server, &id, "dealer-b", 1_100).await; // A is outbid
    bid(&server, &id, "dealer-a", 1_200).await; // B is outbid
    let expect_a = json!({ "outbid": { "yourAmountCents": 1_000, "amountCents": 1_100 } });
    assert_eq!(a.take(1, T).await[0]["data"], expect_a);
    assert_eq!(a2.take(1, T).await[0]["data"], expect_a);
    assert_eq!(
        b.take(1, T).await[0]["data"],
        json!({ "outbid": { "yourAmountCents": 1_100, "amountCents": 1_200 } })
    );
    for s in [&mut a, &mut a2, &mut b, &mut c] {
        assert!(
            s.next(Duration::from_millis(300)).await.is_none(),
            "nobody sees another dealer's outbid"
        );
    }

    // Without a dealer token the subscription is refused.
    let mut anon = ws::subscribe(server.addr, None, outbid, json!({ "id": id }))
        .await
        .unwrap();
    match anon.next(T).await {
        Some(ws::Frame::Next(v)) => assert_eq!(v["errors"][0]["extensions"]["code"], "FORBIDDEN"),
        other => panic!("expected FORBIDDEN, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_is_dropped_without_delaying_the_others() {
    const BIDS: i64 = 400;
    let db = TestDb::create(Backend::Sqlite).await;
    let config = WsConfig {
        outbox_capacity: 8,
        ..WsConfig::default()
    };
    let server = start_server_with(&db, config, Some(4_096)).await;
    let seller = Client::new(server.addr, Some(token("seller-1", Role::Seller)));
    let id = open_auction(&seller, 1_000, 1, 0, 3_600).await;

    let mut stalled = Conn::open(server.addr, "graphql-transport-ws", Some(2_048)).await;
    stalled.init(None).await;
    assert_eq!(
        stalled.recv(T).await.unwrap().unwrap()["type"],
        "connection_ack"
    );
    stalled.send(json!({ "id": "s", "type": "subscribe", "payload": { "query": AMOUNTS, "variables": { "id": id } } })).await;
    let mut healthy = ws::subscribe(server.addr, None, AMOUNTS, json!({ "id": id }))
        .await
        .unwrap();
    wait_members(&server, 1, 2).await;

    let started = std::time::Instant::now();
    let bidding = {
        let server = server.clone();
        let id = id.clone();
        tokio::spawn(async move {
            for i in 0..BIDS {
                bid(&server, &id, "dealer-1", 1_000 + i).await;
            }
        })
    };
    let got = healthy.take(BIDS as usize, T).await;
    assert_eq!(
        amounts(&got),
        (0..BIDS).map(|i| 1_000 + i).collect::<Vec<_>>()
    );
    bidding.await.unwrap();
    let elapsed = started.elapsed();
    // The stalled one was dropped from the group; the healthy one is still there.
    wait_members(&server, 1, 1).await;

    // What the stalled client finally reads: some events, then the close (or a reset).
    let mut seen = 0;
    let ending = loop {
        match stalled.recv(T).await {
            Some(Ok(v)) if v["type"] == "next" => seen += 1,
            Some(Ok(_)) => continue,
            Some(Err(code)) => break code,
            None => panic!("the stalled connection was not closed"),
        }
    };
    assert!(
        seen < BIDS,
        "the stalled consumer cannot have received everything ({seen})"
    );
    assert!(
        matches!(
            ending,
            None | Some(triad_api::ws::outbox::CLOSE_SLOW_CONSUMER)
        ),
        "closed with {ending:?}"
    );
    eprintln!("healthy subscriber received {BIDS} events in {elapsed:?}; stalled one got {seen} before being dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_into_a_live_group_has_no_gap_or_duplicate() {
    let db = TestDb::create(Backend::Postgres).await;
    let (server, anon, id) = setup(&db).await;
    let doc = "subscription($id: ID!, $after: Int) { bidPlaced(auctionId: $id, after: $after) { amountCents position } }";
    let mut live = ws::subscribe(server.addr, None, doc, json!({ "id": id }))
        .await
        .unwrap();
    wait_members(&server, 1, 1).await;
    for i in 0..10 {
        place_bid(
            &anon.with_token(Some(token("dealer-1", Role::Dealer))),
            &id,
            1_000 + i,
            None,
        )
        .await
        .ok();
    }
    let first = live.take(10, T).await;
    let cursor = first[3]["data"]["bidPlaced"]["position"].as_i64().unwrap();
    // Joins the same group (the cursor is not part of the key), replaying 6 stored events.
    let mut resumed = ws::subscribe(server.addr, None, doc, json!({ "id": id, "after": cursor }))
        .await
        .unwrap();
    wait_members(&server, 1, 2).await;
    for i in 10..15 {
        bid(&server, &id, "dealer-2", 1_000 + i).await;
    }
    let got: Vec<i64> = resumed
        .take(11, T)
        .await
        .iter()
        .map(|f| f["data"]["bidPlaced"]["amountCents"].as_i64().unwrap())
        .collect();
    assert_eq!(got, (4..15).map(|i| 1_000 + i).collect::<Vec<_>>());
    assert!(resumed.next(Duration::from_millis(300)).await.is_none());
    assert_eq!(live.take(5, T).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_graphql_ws_protocol_and_protocol_errors() {
    let db = TestDb::create(Backend::Sqlite).await;
    let (server, _, id) = setup(&db).await;

    // subscriptions-transport-ws: start / data / stop / complete.
    let mut legacy = Conn::open(server.addr, "graphql-ws", None).await;
    legacy.init(None).await;
    assert_eq!(
        legacy.recv(T).await.unwrap().unwrap()["type"],
        "connection_ack"
    );
    legacy.send(json!({ "id": "7", "type": "start", "payload": { "query": AMOUNTS, "variables": { "id": id } } })).await;
    wait_members(&server, 1, 1).await;
    bid(&server, &id, "dealer-1", 1_234).await;
    let data = legacy.recv(T).await.unwrap().unwrap();
    assert_eq!(
        data,
        json!({ "id": "7", "type": "data", "payload": { "data": { "bidPlaced": { "amountCents": 1_234 } } } })
    );
    legacy.send(json!({ "id": "7", "type": "stop" })).await;
    assert_eq!(
        legacy.recv(T).await.unwrap().unwrap(),
        json!({ "id": "7", "type": "complete" })
    );
    wait_members(&server, 0, 0).await;

    // Queries work over the socket too, executed alone.
    let mut conn = Conn::open(server.addr, "graphql-transport-ws", None).await;
    // Subscribing before connection_init: 4401.
    conn.send(json!({ "id": "1", "type": "subscribe", "payload": { "query": AMOUNTS, "variables": { "id": id } } })).await;
    assert_eq!(conn.recv(T).await.unwrap().unwrap_err(), Some(4401));

    let mut conn = Conn::open(server.addr, "graphql-transport-ws", None).await;
    conn.init(Some("garbage")).await;
    assert_eq!(
        conn.recv(T).await.unwrap().unwrap_err(),
        Some(4403),
        "a bad token is refused at connection_init"
    );

    let mut conn = Conn::open(server.addr, "graphql-transport-ws", None).await;
    conn.init(None).await;
    assert_eq!(
        conn.recv(T).await.unwrap().unwrap()["type"],
        "connection_ack"
    );
    conn.send(json!({ "id": "q", "type": "subscribe", "payload": { "query": "query($id: ID!) { auction(id: $id) { id } }", "variables": { "id": id } } })).await;
    assert_eq!(
        conn.recv(T).await.unwrap().unwrap()["payload"]["data"]["auction"]["id"],
        id.as_str()
    );
    assert_eq!(
        conn.recv(T).await.unwrap().unwrap(),
        json!({ "id": "q", "type": "complete" })
    );
    conn.send(json!({ "type": "ping" })).await;
    assert_eq!(conn.recv(T).await.unwrap().unwrap()["type"], "pong");
    conn.send(json!({ "id": "1", "type": "subscribe", "payload": { "query": AMOUNTS, "variables": { "id": id } } })).await;
    conn.send(json!({ "id": "1", "type": "subscribe", "payload": { "query": AMOUNTS, "variables": { "id": id } } })).await;
    assert_eq!(
        conn.recv(T).await.unwrap().unwrap_err(),
        Some(4409),
        "duplicate operation id"
    );

    let mut conn = Conn::open(server.addr, "graphql-transport-ws", None).await;
    conn.init(None).await;
    conn.init(None).await;
    assert_eq!(
        conn.recv(T).await.unwrap().unwrap()["type"],
        "connection_ack"
    );
    assert_eq!(
        conn.recv(T).await.unwrap().unwrap_err(),
        Some(4429),
        "a second connection_init"
    );
}
