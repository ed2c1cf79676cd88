//! Replay, verify (and the tampering it must name), and reading version-1 events.

use serde_json::{json, Value};
use triad_api::tools::{self, Format};
use triad_domain::Role;
use triad_eventstore::store::LogFilter;
use triad_tests::gql::{open_auction, place_bid};
use triad_tests::{eventually, settled, start_server, token, Backend, Client, TestDb};

/// Two auctions with a few bids each; returns their ids.
async fn seed(server: &triad_api::Server) -> (String, String) {
    let anon = Client::new(server.addr, None);
    let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
    let dealer = anon.with_token(Some(token("dealer-1", Role::Dealer)));
    let a = open_auction(&seller, 1_000, 100, 0, 3_600).await;
    let b = open_auction(&seller, 1_000, 100, 0, 3_600).await;
    for i in 0..3 {
        place_bid(&dealer, &a, 1_000 + i * 100, None).await.ok();
        place_bid(&dealer, &b, 2_000 + i * 100, None).await.ok();
    }
    settled(&server.store).await;
    (a, b)
}

async fn fully_hashed(server: &triad_api::Server) {
    eventually(10, "the hash chain to cover the log", || async {
        let links = triad_eventstore::chain::links(server.store.db(), 0, 10_000)
            .await
            .unwrap();
        links.iter().all(|l| l.hash.is_some()).then_some(())
    })
    .await;
}

async fn replay_lines(
    server: &triad_api::Server,
    from: i64,
    limit: Option<i64>,
    filter: LogFilter,
) -> Vec<Value> {
    let mut out = Vec::new();
    tools::replay(
        &server.store,
        from,
        limit,
        &filter,
        Format::Json,
        false,
        &mut out,
    )
    .await
    .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn verify(server: &triad_api::Server) -> (bool, String) {
    let mut out = Vec::new();
    let ok = tools::verify(&server.store, &mut out).await.unwrap();
    (ok, String::from_utf8(out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_in_order_with_filters() {
    let db = TestDb::create(Backend::Sqlite).await;
    let server = start_server(&db).await;
    let (a, _b) = seed(&server).await;
    let all = replay_lines(&server, 1, None, LogFilter::default()).await;
    assert_eq!(all.len(), 8);
    let positions: Vec<i64> = all
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, (1..=8).collect::<Vec<_>>());
    let only_a = replay_lines(&server, 1, None, LogFilter::aggregate("Auction", &a)).await;
    assert_eq!(only_a.len(), 4);
    assert!(only_a.iter().all(|e| e["aggregate_id"] == a.as_str()));
    let bids = replay_lines(
        &server,
        1,
        None,
        LogFilter {
            event_types: vec!["BidPlaced".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(bids.len(), 6);
    let window = replay_lines(&server, 3, Some(2), LogFilter::default()).await;
    assert_eq!(
        window
            .iter()
            .map(|e| e["position"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [3, 4]
    );
    let mut table = Vec::new();
    tools::replay(
        &server.store,
        1,
        Some(1),
        &LogFilter::default(),
        Format::Table,
        false,
        &mut table,
    )
    .await
    .unwrap();
    assert!(String::from_utf8(table).unwrap().contains("AuctionOpened"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_a_healthy_store() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let db = TestDb::create(backend).await;
        let server = start_server(&db).await;
        seed(&server).await;
        fully_hashed(&server).await;
        let (ok, text) = verify(&server).await;
        assert!(ok, "{backend:?}: {text}");
        assert!(text.contains("8 events checked"), "{text}");
    }
}

async fn tampered(tamper: &str) -> String {
    let db = TestDb::create(Backend::Postgres).await;
    let server = start_server(&db).await;
    seed(&server).await;
    fully_hashed(&server).await;
    assert!(verify(&server).await.0);
    sqlx::raw_sql(tamper)
        .execute(server.store.read_pool())
        .await
        .unwrap();
    let (ok, text) = verify(&server).await;
    assert!(!ok, "tampering went unnoticed: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_each_kind_of_tampering() {
    // 1. An event's content edited in place.
    let text = tampered("UPDATE events SET payload = jsonb_set(payload, '{BidPlaced,amount}', '999999') WHERE position = 4").await;
    assert!(
        text.contains("FAULT position 4") && text.contains("hash chain broken"),
        "{text}"
    );

    // 2. An event removed.
    let text = tampered("DELETE FROM events WHERE position = 6").await;
    assert!(text.contains("FAULT position 6: missing"), "{text}");
    assert!(
        text.contains("sequence"),
        "the aggregate's sequence has a hole too: {text}"
    );

    // 3. An event rewritten with a freshly computed hash of its own: the next link breaks.
    let db = TestDb::create(Backend::Postgres).await;
    let server = start_server(&db).await;
    seed(&server).await;
    fully_hashed(&server).await;
    sqlx::raw_sql("UPDATE events SET payload = jsonb_set(payload, '{BidPlaced,amount}', '5') WHERE position = 3").execute(server.store.read_pool()).await.unwrap();
    let links = triad_eventstore::chain::links(server.store.db(), 2, 1)
        .await
        .unwrap();
    let before = triad_eventstore::chain::links(server.store.db(), 0, 2)
        .await
        .unwrap();
    let forged = triad_eventstore::chain::link_hash(before[1].hash.as_deref().unwrap(), &links[0]);
    sqlx::query("UPDATE events SET hash = $1 WHERE position = 3")
        .bind(&forged)
        .execute(server.store.read_pool())
        .await
        .unwrap();
    let (ok, text) = verify(&server).await;
    assert!(!ok);
    assert!(
        !text.contains("FAULT position 3"),
        "the forged event is self-consistent: {text}"
    );
    assert!(
        text.contains("FAULT position 4") && text.contains("hash chain broken"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_one_events_are_upcast_on_read() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let db = TestDb::create(backend).await;
        let server = start_server(&db).await;
        // An AuctionOpened as version 1 wrote it: no has_reserve.
        let ends = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        let v1 = json!({ "AuctionOpened": { "auction_id": "old-1", "seller": "seller-1", "title": "Stored by v1", "starting_price": 1000, "min_increment": 100, "reserve_price": 5000, "ends_at": ends, "opened_at": chrono::Utc::now().to_rfc3339() } });
        let meta = json!({ "event_id": uuid::Uuid::now_v7().to_string(), "command_id": "c", "correlation_id": "c", "causation_id": "c", "actor_sub": "seller-1", "actor_role": "seller", "recorded_at": chrono::Utc::now().to_rfc3339() });
        let sql = match backend {
            Backend::Postgres => "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ('Auction', 'old-1', 1, 'AuctionOpened', '1', CAST($1 AS jsonb), CAST($2 AS jsonb))",
            Backend::Sqlite => "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ('Auction', 'old-1', 1, 'AuctionOpened', '1', $1, $2)",
        };
        sqlx::query(sql)
            .bind(v1.to_string())
            .bind(meta.to_string())
            .execute(server.store.read_pool())
            .await
            .unwrap();
        let read = eventually(10, "the v1 row in the log", || async {
            let e = server
                .store
                .read(1, 10, &LogFilter::aggregate("Auction", "old-1"))
                .await
                .unwrap();
            e.into_iter().next()
        })
        .await;
        assert_eq!(read.event_version, "2", "{backend:?}");
        assert_eq!(read.payload["AuctionOpened"]["has_reserve"], true);
        // The aggregate loads through the upcaster too, and takes bids.
        let dealer = Client::new(server.addr, Some(token("dealer-1", Role::Dealer)));
        let r = place_bid(&dealer, "old-1", 1_000, None).await;
        assert_eq!(r.ok()["placeBid"]["auction"]["version"], 2);
        // The read model was built from it as well.
        let anon = Client::new(server.addr, None);
        eventually(10, "the read model", || async {
            let r = anon
                .query("{ auction(id: \"old-1\") { title } }", json!({}))
                .await;
            (r.ok()["auction"]["title"] == "Stored by v1").then_some(())
        })
        .await;
    }
}

/// A rebuild while clients keep bidding and reading: readers never fail or go backwards,
/// no event is lost, and the result equals a fresh replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_while_bidding_and_reading() {
    let db = TestDb::create(Backend::Postgres).await;
    let server = start_server(&db).await;
    let (a, _) = seed(&server).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bidder = {
        let (addr, a, stop) = (server.addr, a.clone(), stop.clone());
        tokio::spawn(async move {
            let dealer = Client::new(addr, Some(token("dealer-2", Role::Dealer)));
            let mut amount = 10_000;
            let mut accepted = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if place_bid(&dealer, &a, amount, None).await.code().is_none() {
                    accepted += 1;
                }
                amount += 100;
            }
            accepted
        })
    };
    let reader = {
        let (addr, a, stop) = (server.addr, a.clone(), stop.clone());
        tokio::spawn(async move {
            let anon = Client::new(addr, None);
            let mut last = 0;
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = anon
                    .query(
                        "query($id: ID!) { auction(id: $id) { bidCount } }",
                        json!({ "id": a }),
                    )
                    .await;
                let count = r.ok()["auction"]["bidCount"]
                    .as_i64()
                    .expect("the auction is always readable");
                assert!(
                    count >= last,
                    "a reader went backwards: {last} then {count}"
                );
                last = count;
                reads += 1;
            }
            reads
        })
    };
    let projection = triad_projections::auctions::AuctionProjection;
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        triad_projections::rebuild::rebuild(&server.store, &projection, &|_, _| {})
            .await
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let accepted = bidder.await.unwrap();
    let reads = reader.await.unwrap();
    assert!(accepted > 0 && reads > 0);
    settled(&server.store).await;
    let (state, version) = server.auctions.load(&a).await.unwrap();
    let anon = Client::new(server.addr, None);
    let view = eventually(10, "the read model to catch up", || async {
        let r = anon.query("query($id: ID!) { auction(id: $id) { bidCount version highestBid { amountCents } } }", json!({ "id": a })).await;
        let v = r.ok()["auction"].clone();
        (v["version"].as_u64() == Some(version as u64)).then_some(v)
    })
    .await;
    assert_eq!(
        view["bidCount"].as_u64(),
        Some(state.bid_count),
        "no event lost: {} accepted during rebuilds",
        accepted
    );
    assert_eq!(
        view["highestBid"]["amountCents"].as_i64(),
        state.highest.map(|h| h.amount.get())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_effects_are_never_rebuilt_and_outdated_projections_rebuild_at_start() {
    let db = TestDb::create(Backend::Sqlite).await;
    {
        let server = start_server(&db).await;
        seed(&server).await;
        let outbox = triad_projections::notifications::NotificationOutbox;
        let refused = triad_projections::rebuild::rebuild(&server.store, &outbox, &|_, _| {}).await;
        assert!(
            refused.is_err(),
            "the notification outbox must not be replayed"
        );
        // Pretend the auctions projection was built by older code.
        sqlx::query("UPDATE projection_checkpoints SET version = 0 WHERE name = 'auctions'")
            .execute(server.store.read_pool())
            .await
            .unwrap();
        sqlx::query("DELETE FROM auction_view")
            .execute(server.store.read_pool())
            .await
            .unwrap();
    }
    let server = start_server(&db).await;
    let version = triad_projections::runner::stored_version(server.store.read_pool(), "auctions")
        .await
        .unwrap();
    assert_eq!(version, Some(1));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM auction_view")
        .fetch_one(server.store.read_pool())
        .await
        .unwrap();
    assert_eq!(rows, 2, "rebuilt from the log at start");
}

/// Every row of `table`, each as its columns rendered to text, sorted: a backend-neutral dump.
async fn dump(pool: &sqlx::AnyPool, table: &str) -> Vec<Vec<String>> {
    use sqlx::{Column, Row};
    let rows = sqlx::query(&format!("SELECT * FROM {table}"))
        .fetch_all(pool)
        .await
        .unwrap();
    let mut out: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            (0..r.columns().len())
                .map(|i| {
                    let name = r.columns()[i].name().to_string();
                    let value = if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
                        format!("{v:?}")
                    } else if let Ok(v) = r.try_get::<Option<f64>, _>(i) {
                        format!("{v:?}")
                    } else if let Ok(v) = r.try_get::<Option<String>, _>(i) {
                        format!("{v:?}")
                    } else {
                        "<other>".to_string()
                    };
                    format!("{name}={value}")
                })
                .collect()
        })
        .collect();
    out.sort();
    out
}

/// A projection that folds a page in memory (`apply_batch`) must leave exactly the rows that
/// applying the same events one at a time leaves: checked for every replayable projection on
/// both backends, over interleaved auctions with several bidders, a sale and a no-sale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folded_page_equals_the_events_applied_one_by_one() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let db = TestDb::create(backend).await;
        let server = start_server(&db).await;
        let anon = Client::new(server.addr, None);
        let seller = anon.with_token(Some(token("seller-1", Role::Seller)));
        let dealers: Vec<Client> = (1..=3)
            .map(|i| anon.with_token(Some(token(&format!("dealer-{i}"), Role::Dealer))))
            .collect();
        let sold = open_auction(&seller, 1_000, 100, 1_500, 3_600).await;
        let unsold = open_auction(&seller, 1_000, 100, 90_000, 3_600).await;
        let untouched = open_auction(&seller, 1_000, 100, 0, 3_600).await;
        for round in 0..4 {
            for (i, dealer) in dealers.iter().enumerate() {
                let amount = 1_000 + (round * 3 + i as i64) * 100;
                assert!(place_bid(dealer, &sold, amount, None)
                    .await
                    .code()
                    .is_none());
                assert!(place_bid(dealer, &unsold, amount, None)
                    .await
                    .code()
                    .is_none());
            }
        }
        for id in [&sold, &unsold] {
            let r = seller
                .query(
                    "mutation($id: ID!) { closeAuction(auctionId: $id) { status } }",
                    json!({ "id": id }),
                )
                .await;
            assert!(r.code().is_none(), "closing {id}: {:?}", r.code());
        }
        // Patients: vitals over several minutes and hours, in two batches (the second
        // repeats readings of the first, which must not count twice), for both rollups.
        let admin = anon.with_token(Some(token("admin-1", Role::Admin)));
        let r = admin
            .query(
                "mutation($input: EnrollPatientInput!) { enrollPatient(input: $input) { id } }",
                json!({ "input": { "name": "Fold Test", "dateOfBirth": "1970-01-01", "careTeam": ["doc-1"] } }),
            )
            .await;
        let patient = r.ok()["enrollPatient"]["id"].as_str().unwrap().to_string();
        let start = chrono::Utc::now() - chrono::Duration::hours(4);
        let readings = |from: i64, to: i64| -> Value {
            (from..to)
                .map(|i| {
                    let at = (start + chrono::Duration::seconds(i * 97)).to_rfc3339();
                    json!({ "kind": if i % 2 == 0 { "HEART_RATE" } else { "SPO2" }, "value": 60 + (i * 7) % 40, "at": at })
                })
                .collect()
        };
        for (from, to) in [(0, 60), (40, 120)] {
            let r = admin
                .query(
                    "mutation($input: RecordVitalsInput!) { recordVitals(input: $input) { recorded } }",
                    json!({ "input": { "patientId": patient, "readings": readings(from, to) } }),
                )
                .await;
            assert!(r.code().is_none(), "recordVitals: {}", r.body);
        }
        settled(&server.store).await;
        let projections = triad_api::server::projections(&server.store).await;
        let replayable: Vec<&dyn triad_projections::Projection> = projections
            .iter()
            .filter(|p| p.replayable())
            .map(|p| p.as_ref())
            .collect();
        triad_projections::rebuild::rebuild_all(&server.store, &replayable, &|_, _| {})
            .await
            .unwrap();
        let pool = server.store.read_pool();
        let mut folded = vec![];
        for p in &replayable {
            for table in p.tables() {
                folded.push((table.to_string(), dump(pool, table).await));
            }
        }
        let statuses: Vec<String> = folded
            .iter()
            .filter(|(t, _)| t == "auction_view")
            .flat_map(|(_, rows)| rows.iter().map(|r| r[3].clone()))
            .collect();
        assert_eq!(statuses.len(), 3, "{statuses:?}");
        let vitals = folded
            .iter()
            .find(|(t, _)| t == "vitals")
            .map(|(_, rows)| rows.len());
        assert_eq!(vitals, Some(120), "every reading once");
        for (status, id) in [("SOLD", &sold), ("UNSOLD", &unsold), ("OPEN", &untouched)] {
            assert!(
                statuses.contains(&format!("status={:?}", Some(status))),
                "{id} should be {status}: {statuses:?}"
            );
        }

        // The same log again, one event per call, in one transaction (no live runner can
        // interleave: the checkpoints are not moved, and the server's runners are caught up).
        let log = server
            .store
            .read(1, 100_000, &LogFilter::default())
            .await
            .unwrap();
        let mut tx = pool.begin().await.unwrap();
        for p in &replayable {
            for table in p.tables() {
                sqlx::query(&format!("DELETE FROM {table}"))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            for e in &log {
                p.apply(&mut tx, e).await.unwrap();
            }
        }
        tx.commit().await.unwrap();
        for (table, rows) in &folded {
            assert_eq!(
                &dump(pool, table).await,
                rows,
                "{table} differs between the folded page and one-by-one ({backend:?})"
            );
        }
    }
}
