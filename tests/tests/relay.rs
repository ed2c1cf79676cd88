//! The ERP relay: no dual writes, nothing lost, nothing applied twice.

use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use triad_api::relay::{Relay, RelayConfig};
use triad_domain::Role;
use triad_tests::erp::{Erp, Mode};
use triad_tests::gql::{open_auction, place_bid};
use triad_tests::{eventually, start_server, token, Backend, Client, TestDb};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn listen(erp: &Arc<Erp>, port: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(erp.clone().serve(listener));
}

fn config(port: u16, max_attempts: u32) -> RelayConfig {
    RelayConfig {
        url: format!("http://127.0.0.1:{port}/erp/events"),
        auth_header: Some("Bearer erp-token".into()),
        max_attempts,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        timeout: Duration::from_millis(400),
    }
}

/// Opens, bids on and closes `n` auctions (each SOLD); returns their ids.
async fn sell(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let anon = Client::new(addr, None);
    let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
    let dealer = anon.with_token(Some(token("dealer-1", Role::Dealer)));
    let mut ids = vec![];
    for _ in 0..n {
        let id = open_auction(&seller, 1_000, 100, 0, 3_600).await;
        place_bid(&dealer, &id, 1_500, None).await.ok();
        let r = seller
            .query(
                "mutation($id: ID!) { closeAuction(auctionId: $id) { status } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(r.ok()["closeAuction"]["status"], "SOLD");
        ids.push(id);
    }
    ids
}

/// The `triad` binary, built if needed (the relay runs as its own process in these tests).
fn triad_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let status =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "-q", "-p", "triad-api", "--bin", "triad"])
                .current_dir(&root)
                .status()
                .expect("cargo build runs");
        assert!(status.success(), "building triad failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"));
        target.join("debug").join("triad")
    })
    .clone()
}

fn relay_process(db: &TestDb, port: u16) -> tokio::process::Child {
    tokio::process::Command::new(triad_bin())
        .args(["relay", "--store", &db.url])
        .env(
            "TRIAD_ERP_URL",
            format!("http://127.0.0.1:{port}/erp/events"),
        )
        .env("TRIAD_ERP_MAX_ATTEMPTS", "30")
        .env("TRIAD_ERP_BACKOFF_MS", "20")
        .env("TRIAD_ERP_TIMEOUT_MS", "1000")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the relay starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sale_reaches_the_erp_once_through_every_failure_mode() {
    let port = free_port();
    let db = TestDb::create(Backend::Postgres).await;
    let server = triad_api::Server::start(triad_api::ServerConfig {
        relay: Some(config(port, 30)),
        ..triad_tests::server_config(&db)
    })
    .await
    .unwrap();
    let ids = sell(server.addr, 4).await;
    // Refused at first: nothing listens yet.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let erp = Erp::new(Mode::EveryFailureOnce);
    listen(&erp, port).await;
    eventually(30, "every sale applied", || async {
        (erp.applied_count() == 4).then_some(())
    })
    .await;
    let applied = erp.applied.lock().unwrap().clone();
    for id in &ids {
        let m = applied
            .values()
            .find(|m| m["auctionId"] == id.as_str())
            .expect("each sale applied");
        assert_eq!(m["type"], "auction.sold");
        assert_eq!(m["amountCents"], 1_500);
        assert_eq!(m["buyerId"], "dealer-1");
        assert_eq!(m["schemaVersion"], 1);
        assert!(m["sourcePosition"].as_i64().unwrap() > 0);
    }
    // Applied on the first receipt (then dropped unanswered), acknowledged on the fourth.
    eventually(30, "each to go through every failure mode", || async {
        let r = erp.receipts.lock().unwrap().clone();
        (r.len() == 4 && r.values().all(|n| *n >= 4)).then_some(())
    })
    .await;
    assert_eq!(
        erp.applied_count(),
        4,
        "applied once each, however often received"
    );
    // The idempotency key is the source event's id.
    triad_tests::settled(&server.store).await;
    let closed = server
        .store
        .read(
            1,
            1_000,
            &triad_eventstore::store::LogFilter {
                event_types: vec!["AuctionClosed".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for e in closed {
        assert!(applied.contains_key(&e.metadata().unwrap().event_id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_and_restarted_loses_nothing() {
    let port = free_port();
    let db = TestDb::create(Backend::Postgres).await;
    let server = start_server(&db).await;
    let erp = Erp::new(Mode::Healthy);
    // A slow ERP and a backlog several times the relay's in-flight window: the kill lands
    // while messages are in flight and others wait, whatever the machine's speed.
    *erp.delay.lock().unwrap() = Duration::from_millis(300);
    listen(&erp, port).await;
    const SALES: usize = 40;
    let ids = sell(server.addr, SALES).await;
    let mut relay = relay_process(&db, port);
    eventually(60, "a first few applied", || async {
        (erp.applied_count() >= 3).then_some(())
    })
    .await;
    relay.start_kill().unwrap(); // SIGKILL
    relay.wait().await.unwrap();
    let at_kill = erp.applied_count();
    assert!(at_kill < SALES, "killed mid-stream ({at_kill} applied)");
    let _relay = relay_process(&db, port);
    eventually(60, "everything applied after the restart", || async {
        (erp.applied_count() == SALES).then_some(())
    })
    .await;
    let applied = erp.applied.lock().unwrap().clone();
    for id in &ids {
        assert_eq!(
            applied
                .values()
                .filter(|m| m["auctionId"] == id.as_str())
                .count(),
            1,
            "{id} applied exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_deliver_through_one_leader_and_hand_over() {
    let port = free_port();
    let db = TestDb::create(Backend::Postgres).await;
    let server = start_server(&db).await;
    let erp = Erp::new(Mode::Healthy);
    listen(&erp, port).await;
    let mut first = relay_process(&db, port);
    tokio::time::sleep(Duration::from_millis(1_500)).await; // the first takes the lead
    let _second = relay_process(&db, port);
    sell(server.addr, 5).await;
    eventually(60, "five applied", || async {
        (erp.applied_count() == 5).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        erp.receipts.lock().unwrap().values().all(|n| *n == 1),
        "only the leader sends"
    );
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    sell(server.addr, 5).await;
    eventually(60, "the second relay took over", || async {
        (erp.applied_count() == 10).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_holds_back_only_its_auction_and_is_redriven() {
    let port = free_port();
    let db = TestDb::create(Backend::Postgres).await;
    let erp = Erp::new(Mode::Healthy);
    listen(&erp, port).await;
    let server = triad_api::Server::start(triad_api::ServerConfig {
        relay: Some(config(port, 3)),
        ..triad_tests::server_config(&db)
    })
    .await
    .unwrap();
    let anon = Client::new(server.addr, None);
    let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
    let poisoned = open_auction(&seller, 1_000, 100, 0, 3_600).await;
    erp.poisoned.lock().unwrap().push(poisoned.clone());
    seller
        .query(
            "mutation($id: ID!) { closeAuction(auctionId: $id) { status } }",
            json!({ "id": poisoned }),
        )
        .await
        .ok();
    let others = sell(server.addr, 3).await;
    eventually(
        30,
        "the other auctions flow past the dead letter",
        || async { (erp.applied_count() == 3).then_some(()) },
    )
    .await;
    let relay = Relay::new(server.store.clone(), config(port, 3))
        .await
        .unwrap();
    let dead = relay.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1, poisoned);
    assert_eq!(dead[0].3, "dead");
    assert!(others.iter().all(|o| erp
        .applied
        .lock()
        .unwrap()
        .values()
        .any(|m| m["auctionId"] == o.as_str())));
    // The ERP is fixed; a redrive delivers it.
    erp.poisoned.lock().unwrap().clear();
    assert_eq!(relay.redrive().await.unwrap(), 1);
    assert_eq!(erp.applied_count(), 4);
    assert!(relay.dead_letters().await.unwrap().is_empty());
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("triad_relay_dead_lettered_total"),
        "{metrics}"
    );
}
