//! The donation marketplace end to end: geo search, capacity under concurrency, matching,
//! subscriptions, bad input.

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use std::time::Duration as StdDuration;
use triad_domain::Role;
use triad_tests::gql::Reply;
use triad_tests::ws;
use triad_tests::{eventually, start_server, token, Backend, Client, TestDb};

const REGISTER: &str = "mutation($input: RegisterCharityInput!) { registerCharity(input: $input) { id name capacityKg accepts } }";
const POST: &str =
    "mutation($input: PostDonationInput!) { postDonation(input: $input) { id status quantityKg } }";
const CLAIM: &str = "mutation($d: ID!, $c: ID!) { claimDonation(donationId: $d, charityId: $c) { id status claimedBy } }";
const NEAR: &str = "query($lat: Float!, $lng: Float!, $r: Float!, $f: FoodType) { charitiesNear(lat: $lat, lng: $lng, radiusKm: $r, foodType: $f) { charity { id name } distanceKm } }";

async fn register(
    client: &Client,
    name: &str,
    lat: f64,
    lng: f64,
    capacity: f64,
    accepts: &[&str],
) -> String {
    let r = client.query(REGISTER, json!({ "input": { "name": name, "location": { "lat": lat, "lng": lng }, "capacityKg": capacity, "accepts": accepts } })).await;
    r.ok()["registerCharity"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn post(donor: &Client, food: &str, kg: f64, lat: f64, lng: f64) -> Reply {
    let pickup = (Utc::now() + Duration::hours(4)).to_rfc3339();
    donor.query(POST, json!({ "input": { "foodType": food, "quantityKg": kg, "location": { "lat": lat, "lng": lng }, "pickupBy": pickup } })).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_claims_fill_a_charity_with_room_for_ten() {
    let db = TestDb::create(Backend::Postgres).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let manager = anon.with_token(Some(token("manager-1", Role::Charity)));
    let donor = anon.with_token(Some(token("donor-1", Role::Donor)));
    let charity = register(&manager, "Food Bank", 52.37, 4.89, 10.0, &["BAKERY"]).await;
    let mut donations = vec![];
    for _ in 0..50 {
        donations.push(
            post(&donor, "BAKERY", 1.0, 52.37, 4.9).await.ok()["postDonation"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(50));
    let claims = donations.iter().map(|d| {
        let (manager, d, c, barrier) =
            (manager.clone(), d.clone(), charity.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            manager.query(CLAIM, json!({ "d": d, "c": c })).await
        })
    });
    let replies: Vec<Reply> = futures::future::join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let claimed = replies.iter().filter(|r| r.code().is_none()).count();
    let exceeded = replies
        .iter()
        .filter(|r| r.code() == Some("CAPACITY_EXCEEDED"))
        .count();
    assert_eq!(
        (claimed, exceeded),
        (10, 40),
        "{:?}",
        replies.iter().map(|r| r.code()).collect::<Vec<_>>()
    );

    // The store agrees: 10 kg reserved on the charity, 10 donations claimed, 40 still open.
    let (state, _) = server.charities_state(&charity).await;
    let day = (Utc::now() + Duration::hours(4)).date_naive();
    assert!((state.reserved_on(day) - 10.0).abs() < 1e-9);
    let mut statuses = std::collections::HashMap::new();
    for d in &donations {
        let (s, _) = server.donation_state(d).await;
        *statuses.entry(s.status.as_str()).or_insert(0) += 1;
    }
    assert_eq!(statuses.get("CLAIMED"), Some(&10));
    assert_eq!(statuses.get("OPEN"), Some(&40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_donation_is_claimed_once_and_losers_get_their_capacity_back() {
    let db = TestDb::create(Backend::Sqlite).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let donor = anon.with_token(Some(token("donor-1", Role::Donor)));
    let mut charities = vec![];
    for i in 0..8 {
        let manager = anon.with_token(Some(token(&format!("m{i}"), Role::Charity)));
        charities.push((
            manager.clone(),
            register(
                &manager,
                &format!("C{i}"),
                10.0,
                10.0 + i as f64 * 0.01,
                50.0,
                &["PRODUCE"],
            )
            .await,
        ));
    }
    let d = post(&donor, "PRODUCE", 5.0, 10.0, 10.0).await.ok()["postDonation"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let replies = futures::future::join_all(
        charities
            .iter()
            .map(|(m, c)| m.query(CLAIM, json!({ "d": d, "c": c }))),
    )
    .await;
    let winners: Vec<&Reply> = replies.iter().filter(|r| r.code().is_none()).collect();
    assert_eq!(winners.len(), 1);
    assert!(replies
        .iter()
        .filter(|r| r.code().is_some())
        .all(|r| r.code() == Some("DONATION_UNAVAILABLE")));
    let day = (Utc::now() + Duration::hours(4)).date_naive();
    let mut reserved = 0.0;
    for (_, c) in &charities {
        reserved += server.charities_state(c).await.0.reserved_on(day);
    }
    assert!(
        (reserved - 5.0).abs() < 1e-9,
        "only the winner holds capacity ({reserved})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_match_and_subscription_with_resume() {
    let db = TestDb::create(Backend::Postgres).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let donor = anon.with_token(Some(token("donor-1", Role::Donor)));
    let m1 = anon.with_token(Some(token("m1", Role::Charity)));
    let m2 = anon.with_token(Some(token("m2", Role::Charity)));
    let near = register(&m1, "Near", 48.8566, 2.3522, 100.0, &["BAKERY", "DAIRY"]).await;
    let far = register(&m2, "Far", 48.9566, 2.3522, 100.0, &["BAKERY"]).await;
    register(&m2, "Meat only", 48.8570, 2.3522, 100.0, &["MEAT"]).await;

    let found = eventually(10, "the geo index", || async {
        let r = anon
            .query(
                NEAR,
                json!({ "lat": 48.8566, "lng": 2.3522, "r": 20.0, "f": "BAKERY" }),
            )
            .await;
        let hits = r.ok()["charitiesNear"].as_array().unwrap().clone();
        (hits.len() == 2).then_some(hits)
    })
    .await;
    assert_eq!(found[0]["charity"]["id"], near.as_str());
    assert_eq!(found[1]["charity"]["id"], far.as_str());
    assert!((found[1]["distanceKm"].as_f64().unwrap() - 11.12).abs() < 0.05);
    // Without a food filter the meat-only charity (40 m away) is found too.
    eventually(10, "the meat-only charity in the index", || async {
        let r = anon
            .query(NEAR, json!({ "lat": 48.8566, "lng": 2.3522, "r": 5.0 }))
            .await;
        (r.ok()["charitiesNear"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;

    // The near charity watches its matches.
    let sub = "subscription($c: ID!, $after: Int) { donationMatched(charityId: $c, after: $after) { donationId charityId distanceKm position } }";
    let t1 = token("m1", Role::Charity);
    let mut watcher = ws::subscribe(server.addr, Some(&t1), sub, json!({ "c": near }))
        .await
        .unwrap();
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    let d1 = post(&donor, "BAKERY", 3.0, 48.857, 2.353).await.ok()["postDonation"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = watcher.take(1, StdDuration::from_secs(10)).await;
    assert_eq!(got[0]["data"]["donationMatched"]["donationId"], d1.as_str());
    let cursor = got[0]["data"]["donationMatched"]["position"]
        .as_i64()
        .unwrap();
    let matches = eventually(10, "proposals on the donation", || async {
        let r = anon
            .query(
                "query($id: ID!) { donation(id: $id) { matches { charityId distanceKm } } }",
                json!({ "id": d1 }),
            )
            .await;
        let m = r.ok()["donation"]["matches"].as_array().unwrap().clone();
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(
        matches[0]["charityId"],
        near.as_str(),
        "the nearest charity first"
    );
    watcher.close().await;

    // Two more while disconnected; a reconnect with `after` gets exactly those.
    let d2 = post(&donor, "DAIRY", 1.0, 48.857, 2.353).await.ok()["postDonation"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d3 = post(&donor, "BAKERY", 1.0, 48.857, 2.353).await.ok()["postDonation"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut resumed = ws::subscribe(
        server.addr,
        Some(&t1),
        sub,
        json!({ "c": near, "after": cursor }),
    )
    .await
    .unwrap();
    let got: Vec<Value> = resumed.take(2, StdDuration::from_secs(10)).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|v| v["data"]["donationMatched"]["donationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [d2.as_str(), d3.as_str()]);
    assert!(resumed.next(StdDuration::from_millis(300)).await.is_none());

    // Another charity's manager may not watch this one.
    let t2 = token("m2", Role::Charity);
    let mut intruder = ws::subscribe(server.addr, Some(&t2), sub, json!({ "c": near }))
        .await
        .unwrap();
    match intruder.next(StdDuration::from_secs(10)).await {
        Some(ws::Frame::Next(v)) => assert_eq!(v["errors"][0]["extensions"]["code"], "FORBIDDEN"),
        other => panic!("expected FORBIDDEN, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_coordinates_and_quantities_are_rejected() {
    let db = TestDb::create(Backend::Sqlite).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let manager = anon.with_token(Some(token("m1", Role::Charity)));
    let donor = anon.with_token(Some(token("d1", Role::Donor)));
    for (lat, lng) in [(91.0, 0.0), (-90.5, 0.0), (0.0, 180.5), (0.0, -181.0)] {
        let r = manager.query(REGISTER, json!({ "input": { "name": "X", "location": { "lat": lat, "lng": lng }, "capacityKg": 10, "accepts": ["BAKERY"] } })).await;
        assert_eq!(r.code(), Some("INVALID_INPUT"), "({lat}, {lng})");
        assert_eq!(
            post(&donor, "BAKERY", 1.0, lat, lng).await.code(),
            Some("INVALID_INPUT")
        );
        let r = anon
            .query(NEAR, json!({ "lat": lat, "lng": lng, "r": 10.0 }))
            .await;
        assert_eq!(r.code(), Some("INVALID_INPUT"));
    }
    for kg in [0.0, -1.0, 1e9] {
        assert_eq!(
            post(&donor, "BAKERY", kg, 10.0, 10.0).await.code(),
            Some("INVALID_INPUT"),
            "{kg} kg"
        );
        let r = manager.query(REGISTER, json!({ "input": { "name": "X", "location": { "lat": 1, "lng": 1 }, "capacityKg": kg, "accepts": ["BAKERY"] } })).await;
        assert_eq!(r.code(), Some("INVALID_INPUT"));
    }
    for r in [0.0, -5.0, 10_000.0] {
        assert_eq!(
            anon.query(NEAR, json!({ "lat": 1, "lng": 1, "r": r }))
                .await
                .code(),
            Some("INVALID_INPUT")
        );
    }
    let r = manager.query(REGISTER, json!({ "input": { "name": "X", "location": { "lat": 1, "lng": 1 }, "capacityKg": 5, "accepts": [] } })).await;
    assert_eq!(
        r.code(),
        Some("INVALID_INPUT"),
        "a charity accepts something"
    );
    assert_eq!(
        post(&manager, "BAKERY", 1.0, 1.0, 1.0).await.code(),
        Some("FORBIDDEN"),
        "charities do not post donations"
    );
    triad_tests::settled(&server.store).await;
    assert!(
        server.store.read_all(1, 10).await.unwrap().is_empty(),
        "nothing stored"
    );
}

/// A push gateway that misbehaves in every way a mobile network can: it refuses
/// connections at first, then per notification applies it and drops the connection without
/// answering, answers 500, hangs past the sender's timeout, and only then answers 200.
/// It applies each notification once, deduplicating by idempotency key.
struct FlakyGateway {
    applied: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    receipts: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    healthy: std::sync::atomic::AtomicBool,
}

impl FlakyGateway {
    async fn serve(self: std::sync::Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let me = self.clone();
            tokio::spawn(async move { me.handle(socket).await });
        }
    }

    async fn handle(&self, mut socket: tokio::net::TcpStream) {
        use tokio::io::AsyncWriteExt;
        let Some((head, body)) = triad_tests::erp::read_request(&mut socket).await else {
            return;
        };
        let key = head
            .lines()
            .find_map(|l| {
                l.to_lowercase()
                    .strip_prefix("idempotency-key:")
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(
            body["idempotencyKey"],
            key.as_str(),
            "the key travels in the body too"
        );
        let attempt = {
            let mut r = self.receipts.lock().unwrap();
            let n = r.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        if !self.healthy.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = socket.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            return;
        }
        match attempt {
            1 => {
                // Applied, then the connection drops before the answer.
                *self.applied.lock().unwrap().entry(key).or_default() += 1;
            }
            2 => {
                let _ = socket.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            }
            3 => tokio::time::sleep(StdDuration::from_secs(3)).await,
            _ => {
                // Deduplicate: apply only if new.
                self.applied.lock().unwrap().entry(key).or_insert(1);
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        }
    }
}

async fn outbox(
    server: &triad_api::Server,
    status: &str,
) -> Vec<triad_projections::notifications::Notification> {
    triad_projections::notifications::with_status(server.store.read_pool(), status, 1_000)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_survive_a_flaky_gateway_and_dead_letters_redrive() {
    // A port nobody listens on yet: the first attempts are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let db = TestDb::create(Backend::Postgres).await;
    let server = triad_api::Server::start(triad_api::ServerConfig {
        push: Some(triad_api::push::PushConfig {
            url: format!("http://127.0.0.1:{port}/push"),
            max_attempts: 20,
            base_backoff: StdDuration::from_millis(10),
            max_backoff: StdDuration::from_millis(100),
            timeout: StdDuration::from_millis(400),
        }),
        ..triad_tests::server_config(&db)
    })
    .await
    .unwrap();
    let anon = Client::new(server.addr, None);
    let donor = anon.with_token(Some(token("donor-1", Role::Donor)));
    for i in 0..2 {
        let m = anon.with_token(Some(token(&format!("m{i}"), Role::Charity)));
        register(
            &m,
            &format!("C{i}"),
            40.0,
            -3.7 + i as f64 * 0.01,
            100.0,
            &["PREPARED"],
        )
        .await;
    }
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    for _ in 0..3 {
        post(&donor, "PREPARED", 2.0, 40.0, -3.7).await.ok();
    }
    let expected = eventually(10, "six notifications in the outbox", || async {
        let all =
            triad_projections::notifications::with_status(server.store.read_pool(), "pending", 100)
                .await
                .unwrap();
        (all.len() == 6).then_some(all)
    })
    .await;
    // Let a few attempts be refused, then start the gateway.
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    let gateway = std::sync::Arc::new(FlakyGateway {
        applied: Default::default(),
        receipts: Default::default(),
        healthy: true.into(),
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(gateway.clone().serve(listener));

    eventually(30, "every notification delivered", || async {
        (outbox(&server, "delivered").await.len() == 6).then_some(())
    })
    .await;
    let applied = gateway.applied.lock().unwrap().clone();
    assert_eq!(applied.len(), 6, "every notification applied");
    assert!(
        applied.values().all(|n| *n == 1),
        "each applied exactly once: {applied:?}"
    );
    let keys: std::collections::HashSet<String> = expected.iter().map(|n| n.key.clone()).collect();
    assert_eq!(
        applied
            .keys()
            .cloned()
            .collect::<std::collections::HashSet<_>>(),
        keys
    );
    assert!(
        gateway.receipts.lock().unwrap().values().all(|n| *n >= 4),
        "each went through every failure mode"
    );

    // A gateway that keeps failing: notifications end dead-lettered, and a redrive delivers them.
    gateway
        .healthy
        .store(false, std::sync::atomic::Ordering::SeqCst);
    post(&donor, "PREPARED", 1.0, 40.0, -3.7).await.ok();
    let dead = eventually(30, "dead letters", || async {
        let d = outbox(&server, "dead").await;
        (d.len() == 2).then_some(d)
    })
    .await;
    assert!(dead
        .iter()
        .all(|n| n.attempts == 20 && n.last_error.is_some()));
    gateway
        .healthy
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        triad_projections::notifications::redrive(server.store.read_pool())
            .await
            .unwrap(),
        2
    );
    eventually(30, "redriven notifications delivered", || async {
        (outbox(&server, "delivered").await.len() == 8).then_some(())
    })
    .await;
    assert_eq!(gateway.applied.lock().unwrap().len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_food_is_expired_and_cannot_be_claimed() {
    let db = TestDb::create(Backend::Sqlite).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let donor = anon.with_token(Some(token("donor-1", Role::Donor)));
    let manager = anon.with_token(Some(token("m1", Role::Charity)));
    let charity = register(&manager, "C", 1.0, 1.0, 10.0, &["DAIRY"]).await;
    let now = Utc::now();
    let r = donor
        .query(POST, json!({ "input": { "foodType": "DAIRY", "quantityKg": 1.0, "location": { "lat": 1.0, "lng": 1.0 }, "pickupBy": (now + Duration::milliseconds(800)).to_rfc3339(), "expiresAt": (now + Duration::milliseconds(1_200)).to_rfc3339() } }))
        .await;
    let id = r.ok()["postDonation"]["id"].as_str().unwrap().to_string();
    eventually(10, "the scheduler to expire it", || async {
        let r = anon
            .query(
                "query($id: ID!) { donation(id: $id) { status } }",
                json!({ "id": id }),
            )
            .await;
        (r.ok()["donation"]["status"] == "EXPIRED").then_some(())
    })
    .await;
    let r = manager.query(CLAIM, json!({ "d": id, "c": charity })).await;
    assert_eq!(r.code(), Some("DONATION_UNAVAILABLE"));
    let day = (now + Duration::milliseconds(800)).date_naive();
    assert_eq!(
        server.charities_state(&charity).await.0.reserved_on(day),
        0.0,
        "the failed claim gave its capacity back"
    );
}

fn hhmm(t: chrono::DateTime<Utc>) -> String {
    t.format("%H:%M").to_string()
}

/// The matcher only proposes charities that can collect before the pickup deadline, and
/// proposes again for a waiting donation when a charity gains room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_respects_pickup_hours_and_reacts_to_capacity_changes() {
    let db = TestDb::create(Backend::Sqlite).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let donor = anon.with_token(Some(token("donor-1", Role::Donor)));
    let now = Utc::now();
    let reg = |name: &str, lat: f64, capacity: f64, opens: String, closes: String| json!({ "input": { "name": name, "location": { "lat": lat, "lng": 10.0 }, "capacityKg": capacity, "accepts": ["PANTRY"], "pickupHours": { "opensAt": opens, "closesAt": closes } } });
    let m1 = anon.with_token(Some(token("m1", Role::Charity)));
    let m2 = anon.with_token(Some(token("m2", Role::Charity)));
    // Nearest, but opens only 6 hours from now.
    let later = m1
        .query(
            REGISTER,
            reg(
                "Later",
                10.0,
                100.0,
                hhmm(now + Duration::hours(6)),
                hhmm(now + Duration::hours(7)),
            ),
        )
        .await
        .ok()["registerCharity"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A little further, open now.
    let open = m2
        .query(
            REGISTER,
            reg(
                "Open",
                10.02,
                100.0,
                hhmm(now - Duration::hours(1)),
                hhmm(now + Duration::hours(3)),
            ),
        )
        .await
        .ok()["registerCharity"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = post(&donor, "PANTRY", 2.0, 10.0, 10.0).await.ok()["postDonation"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let matches = |id: String| {
        let anon = anon.clone();
        async move {
            let r = anon
                .query(
                    "query($id: ID!) { donation(id: $id) { matches { charityId } } }",
                    json!({ "id": id }),
                )
                .await;
            r.ok()["donation"]["matches"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["charityId"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let got = eventually(10, "proposals", || async {
        let m = matches(d.clone()).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(
        got,
        [open],
        "only the charity that can collect in time (not {later})"
    );

    // Room appears later: a waiting donation is matched then.
    let m3 = anon.with_token(Some(token("m3", Role::Charity)));
    let small = m3.query(REGISTER, json!({ "input": { "name": "Small", "location": { "lat": -20.0, "lng": 30.0 }, "capacityKg": 1.0, "accepts": ["FROZEN"] } })).await.ok()["registerCharity"]["id"].as_str().unwrap().to_string();
    let big = post(&donor, "FROZEN", 5.0, -20.0, 30.0).await.ok()["postDonation"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(10, "the matcher to pass the donation", || async {
        (triad_projections::matcher::position(&server.store)
            .await
            .unwrap()
            >= server.store.head().await.unwrap())
        .then_some(())
    })
    .await;
    assert!(
        matches(big.clone()).await.is_empty(),
        "no charity has room for 5 kg yet"
    );
    let r = m3
        .query(
            "mutation($c: ID!) { updateCharity(charityId: $c, capacityKg: 50) { capacityKg } }",
            json!({ "c": small }),
        )
        .await;
    assert_eq!(r.ok()["updateCharity"]["capacityKg"], 50.0);
    let got = eventually(10, "a match after the capacity change", || async {
        let m = matches(big.clone()).await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(got, [small]);
}

/// Reservations (charity, donation) the sweeper would look at, however young.
async fn unclaimed(server: &triad_api::Server) -> Vec<(String, String)> {
    let far = Utc::now() + Duration::days(365);
    let mut rows: Vec<(String, String)> =
        triad_projections::donations::unclaimed_reservations(server.store.read_pool(), far, 1_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.charity_id, r.donation_id))
            .collect();
    rows.sort();
    rows
}

/// A claim that crashed between its two steps, or lost and could not give its capacity back,
/// leaves a reservation without a claim. The scheduler releases it once it is older than the
/// grace period, as the system, exactly once even with two replicas sweeping; reservations
/// backed by a claim are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_left_without_a_claim_are_swept() {
    use triad_domain::donation::{CharityCommand, CharityEvent, FoodType};
    use triad_eventstore::store::LogFilter;
    use triad_eventstore::CommandContext;

    for backend in [Backend::Postgres, Backend::Sqlite] {
        let db = TestDb::create(backend).await;
        let server = start_server(&db).await;
        let anon = Client::new(server.addr, None);
        let donor = anon.with_token(Some(token("donor-1", Role::Donor)));
        let m1 = anon.with_token(Some(token("m1", Role::Charity)));
        let m2 = anon.with_token(Some(token("m2", Role::Charity)));
        let a = register(&m1, "A", 5.0, 5.0, 10.0, &["BAKERY"]).await;
        let b = register(&m2, "B", 5.0, 5.01, 10.0, &["BAKERY"]).await;
        let mut posted = vec![];
        for kg in [4.0, 5.0, 1.0, 1.0] {
            posted.push(
                post(&donor, "BAKERY", kg, 5.0, 5.0).await.ok()["postDonation"]["id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        let [kept, crashed, lost, later] = <[String; 4]>::try_from(posted).unwrap();
        let (donation, _) = server.donation_state(&kept).await;
        let day = donation.pickup_day().unwrap();

        // A claims `kept` properly.
        let r = m1.query(CLAIM, json!({ "d": kept, "c": a })).await;
        assert_eq!(r.ok()["claimDonation"]["claimedBy"], a.as_str());
        // A's claims of `crashed` and `lost` reserved, then the process died: the reserve
        // step alone, as the saga would have executed it. B then claims `lost`.
        let m1_actor = triad_domain::Actor {
            sub: triad_domain::UserId::parse("m1").unwrap(),
            role: Role::Charity,
        };
        for (d, kg) in [(&crashed, 5.0), (&lost, 1.0)] {
            let reserve = CharityCommand::Reserve {
                donation_id: d.clone(),
                day,
                kg,
                food_type: FoodType::Bakery,
            };
            let outcome = server
                .charities
                .execute(
                    &a,
                    reserve,
                    CommandContext::new(m1_actor.clone(), "crashed-claim"),
                )
                .await
                .unwrap();
            assert_eq!(outcome.events.len(), 1);
        }
        let r = m2.query(CLAIM, json!({ "d": lost, "c": b })).await;
        assert_eq!(r.ok()["claimDonation"]["claimedBy"], b.as_str());

        // The leak: A is full, although it holds only 4 kg of claimed food.
        assert!((server.charities_state(&a).await.0.reserved_on(day) - 10.0).abs() < 1e-9);
        let r = m1.query(CLAIM, json!({ "d": later, "c": a })).await;
        assert_eq!(r.code(), Some("CAPACITY_EXCEEDED"));
        // The read model lists exactly the two reservations no claim of A backs.
        let mut expected = vec![(a.clone(), crashed.clone()), (a.clone(), lost.clone())];
        expected.sort();
        eventually(
            10,
            "the unclaimed reservations in the read model",
            || async { (unclaimed(&server).await == expected).then_some(()) },
        )
        .await;
        assert!(
            server.charities_state(&a).await.0.reserved_on(day) > 9.0,
            "nothing is swept within the default grace"
        );

        // A short grace (and, on PostgreSQL, a second replica sweeping the same store).
        let replica = match backend {
            Backend::Postgres => Some(start_server(&db).await),
            Backend::Sqlite => None,
        };
        for s in std::iter::once(&server).chain(replica.as_ref()) {
            s.set_reservation_grace(StdDuration::from_millis(200));
        }
        let held = eventually(15, "the unclaimed reservations released", || async {
            let (state, _) = server.charities_state(&a).await;
            let held: Vec<String> = state
                .reserved
                .get(&day)
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default();
            (held.len() == 1).then_some(held)
        })
        .await;
        assert_eq!(
            held,
            [kept.as_str()],
            "the claimed donation's reservation is kept"
        );
        assert!((server.charities_state(&a).await.0.reserved_on(day) - 4.0).abs() < 1e-9);
        assert!(
            (server.charities_state(&b).await.0.reserved_on(day) - 1.0).abs() < 1e-9,
            "B's claim keeps its reservation"
        );
        eventually(
            10,
            "the read model to drop the released reservations",
            || async { unclaimed(&server).await.is_empty().then_some(()) },
        )
        .await;

        // Released once each (two replicas notwithstanding), by the scheduler.
        triad_tests::settled(&server.store).await;
        let released: Vec<_> = server
            .store
            .read(1, 10_000, &LogFilter::aggregate("Charity", &a))
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event_type == "CapacityReleased")
            .collect();
        let mut ids: Vec<String> = released
            .iter()
            .map(|e| match e.decode::<CharityEvent>().unwrap() {
                CharityEvent::CapacityReleased { donation_id, .. } => donation_id,
                other => panic!("{other:?}"),
            })
            .collect();
        ids.sort();
        let mut want = vec![crashed.clone(), lost.clone()];
        want.sort();
        assert_eq!(ids, want, "{backend:?}");
        for e in &released {
            let m = e.metadata().unwrap();
            assert_eq!(
                (m.actor_role.as_str(), m.actor_sub.as_str()),
                ("system", "scheduler")
            );
        }
        drop(replica);

        // The capacity is back: A claims `later` and, after all, `crashed`.
        for d in [&later, &crashed] {
            let r = m1.query(CLAIM, json!({ "d": d, "c": a })).await;
            assert_eq!(r.ok()["claimDonation"]["claimedBy"], a.as_str());
        }
        assert!((server.charities_state(&a).await.0.reserved_on(day) - 10.0).abs() < 1e-9);
        // Claimed reservations never become the sweeper's work, however old: with the read
        // model caught up with both claims, nothing is left to sweep.
        triad_tests::settled(&server.store).await;
        let head = server.store.head().await.unwrap();
        assert!(
            server
                .runner
                .wait_for(head, StdDuration::from_secs(10))
                .await,
            "the projections to reach the head"
        );
        assert!(unclaimed(&server).await.is_empty());
        let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("triad_reservation_sweeps_total{outcome=\"released\"}"),
            "{metrics}"
        );
    }
}

const MY_DONATIONS: &str = "query($donor: ID, $status: DonationStatus, $first: Int!, $after: String) { myDonations(donorId: $donor, status: $status, first: $first, after: $after) { edges { cursor node { id donorId status claimedBy quantityKg } } pageInfo { hasNextPage hasPreviousPage endCursor } } }";
const MY_CHARITIES: &str = "query($manager: ID, $first: Int!, $after: String, $day: NaiveDate) { myCharities(managerId: $manager, first: $first, after: $after) { edges { cursor node { id managerId capacityKg reservedKg(day: $day) remainingKg(day: $day) } } pageInfo { hasNextPage hasPreviousPage endCursor } } }";

/// Every page of a connection query (`field`), following `endCursor`: the node ids in order,
/// and each page's (hasNextPage, hasPreviousPage).
async fn all_pages(
    client: &Client,
    query: &str,
    field: &str,
    vars: Value,
) -> (Vec<String>, Vec<(bool, bool)>) {
    let (mut ids, mut pages) = (vec![], vec![]);
    let mut after = Value::Null;
    loop {
        let mut v = vars.clone();
        v["after"] = after;
        let r = client.query(query, v).await;
        let conn = r.ok()[field].clone();
        for e in conn["edges"].as_array().unwrap() {
            ids.push(e["node"]["id"].as_str().unwrap().to_string());
        }
        let info = &conn["pageInfo"];
        let next = info["hasNextPage"].as_bool().unwrap();
        pages.push((next, info["hasPreviousPage"].as_bool().unwrap()));
        if !next {
            return (ids, pages);
        }
        after = info["endCursor"].clone();
    }
}

/// `myDonations`: a donor's own donations, newest first, page by page, by status; nobody
/// else's. Admins name the donor; other roles are FORBIDDEN; a cursor from another connection
/// is INVALID_INPUT. On both stores (the read model's SQL is portable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn donors_list_their_own_donations_newest_first() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let db = TestDb::create(backend).await;
        let server = start_server(&db).await;
        let anon = Client::new(server.addr, None);
        let donor = anon.with_token(Some(token("donor-1", Role::Donor)));
        let other = anon.with_token(Some(token("donor-2", Role::Donor)));
        let manager = anon.with_token(Some(token("m1", Role::Charity)));
        let admin = anon.with_token(Some(token("admin-1", Role::Admin)));
        let charity = register(&manager, "Pantry", 30.0, 30.0, 100.0, &["PANTRY"]).await;
        let mut mine = vec![];
        for kg in [1.0, 2.0, 3.0, 4.0, 5.0] {
            let r = post(&donor, "PANTRY", kg, 30.0, 30.0).await;
            mine.push(r.ok()["postDonation"]["id"].as_str().unwrap().to_string());
        }
        let theirs = post(&other, "PANTRY", 9.0, 30.0, 30.0).await.ok()["postDonation"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let newest_first: Vec<String> = mine.iter().rev().cloned().collect();

        // Everything, once the read model has it; then in pages of two.
        eventually(10, "the donor's donations in the read model", || async {
            let r = donor.query(MY_DONATIONS, json!({ "first": 100 })).await;
            (r.ok()["myDonations"]["edges"].as_array().unwrap().len() == 5).then_some(())
        })
        .await;
        let (ids, pages) =
            all_pages(&donor, MY_DONATIONS, "myDonations", json!({ "first": 2 })).await;
        assert_eq!(
            ids, newest_first,
            "{backend:?}: newest first, no gap, no repeat"
        );
        assert_eq!(pages, [(true, false), (true, true), (false, true)]);

        // Another donor sees only their own, and may not name donor-1.
        eventually(10, "donor-2's donation in the read model", || async {
            let r = other.query(MY_DONATIONS, json!({ "first": 100 })).await;
            let ids: Vec<Value> = r.ok()["myDonations"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["id"].clone())
                .collect();
            (ids == [json!(theirs)]).then_some(())
        })
        .await;
        let r = other
            .query(MY_DONATIONS, json!({ "donor": "donor-1", "first": 10 }))
            .await;
        assert_eq!(r.code(), Some("FORBIDDEN"));
        // Naming oneself is fine.
        let r = donor
            .query(MY_DONATIONS, json!({ "donor": "donor-1", "first": 10 }))
            .await;
        assert_eq!(r.ok()["myDonations"]["edges"].as_array().unwrap().len(), 5);

        // An admin names the donor (and must).
        let (ids, _) = all_pages(
            &admin,
            MY_DONATIONS,
            "myDonations",
            json!({ "donor": "donor-1", "first": 3 }),
        )
        .await;
        assert_eq!(ids, newest_first);
        let r = admin.query(MY_DONATIONS, json!({ "first": 10 })).await;
        assert_eq!(r.code(), Some("INVALID_INPUT"));

        // Other roles, and no token, are refused.
        for who in [
            &manager,
            &anon.with_token(Some(token("d1", Role::Dealer))),
            &anon,
        ] {
            let r = who.query(MY_DONATIONS, json!({ "first": 10 })).await;
            assert_eq!(r.code(), Some("FORBIDDEN"), "{}", r.body);
        }

        // By status: one claimed, four open.
        let claimed = &mine[1];
        manager
            .query(CLAIM, json!({ "d": claimed, "c": charity }))
            .await
            .ok();
        let got = eventually(10, "the claim in the read model", || async {
            let r = donor
                .query(MY_DONATIONS, json!({ "status": "CLAIMED", "first": 10 }))
                .await;
            let edges = r.ok()["myDonations"]["edges"].as_array().unwrap().clone();
            (!edges.is_empty()).then_some(edges)
        })
        .await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["node"]["id"], claimed.as_str());
        assert_eq!(got[0]["node"]["status"], "CLAIMED");
        assert_eq!(got[0]["node"]["claimedBy"], charity.as_str());
        let (open, _) = all_pages(
            &donor,
            MY_DONATIONS,
            "myDonations",
            json!({ "status": "OPEN", "first": 3 }),
        )
        .await;
        let expected: Vec<String> = newest_first
            .iter()
            .filter(|id| *id != claimed)
            .cloned()
            .collect();
        assert_eq!(open, expected);

        // Bad paging input is typed.
        for (first, after) in [
            (10, json!("not-a-cursor")),
            // A cursor of another connection (base64url of "charity:1").
            (10, json!("Y2hhcml0eTox")),
            (0, Value::Null),
            (101, Value::Null),
        ] {
            let r = donor
                .query(MY_DONATIONS, json!({ "first": first, "after": after }))
                .await;
            assert_eq!(r.code(), Some("INVALID_INPUT"), "{first} {after}");
        }
    }
}

/// `myCharities`: a charity user's charities, newest first, page by page; nobody else's. The
/// capacity fields follow claims per pickup day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charity_users_list_their_charities_with_remaining_capacity() {
    let db = TestDb::create(Backend::Postgres).await;
    let server = start_server(&db).await;
    let anon = Client::new(server.addr, None);
    let m1 = anon.with_token(Some(token("m1", Role::Charity)));
    let m2 = anon.with_token(Some(token("m2", Role::Charity)));
    let donor = anon.with_token(Some(token("donor-1", Role::Donor)));
    let admin = anon.with_token(Some(token("admin-1", Role::Admin)));
    let mut mine = vec![];
    for i in 0..3 {
        mine.push(
            register(
                &m1,
                &format!("C{i}"),
                40.0,
                40.0 + i as f64 * 0.01,
                10.0,
                &["DAIRY"],
            )
            .await,
        );
    }
    let theirs = register(&m2, "Other", 40.0, 40.05, 10.0, &["DAIRY"]).await;
    let newest_first: Vec<String> = mine.iter().rev().cloned().collect();

    eventually(10, "m1's charities in the read model", || async {
        let r = m1.query(MY_CHARITIES, json!({ "first": 100 })).await;
        (r.ok()["myCharities"]["edges"].as_array().unwrap().len() == 3).then_some(())
    })
    .await;
    let (ids, pages) = all_pages(&m1, MY_CHARITIES, "myCharities", json!({ "first": 2 })).await;
    assert_eq!(ids, newest_first);
    assert_eq!(pages, [(true, false), (false, true)]);
    let r = m2.query(MY_CHARITIES, json!({ "first": 100 })).await;
    let edges = r.ok()["myCharities"]["edges"].as_array().unwrap().clone();
    assert!(
        edges
            .iter()
            .all(|e| e["node"]["id"] == theirs.as_str() && e["node"]["managerId"] == "m2"),
        "only m2's own: {edges:?}"
    );
    let r = m2
        .query(MY_CHARITIES, json!({ "manager": "m1", "first": 10 }))
        .await;
    assert_eq!(r.code(), Some("FORBIDDEN"));
    let (ids, _) = all_pages(
        &admin,
        MY_CHARITIES,
        "myCharities",
        json!({ "manager": "m1", "first": 10 }),
    )
    .await;
    assert_eq!(ids, newest_first);
    for who in [&donor, &anon] {
        let r = who.query(MY_CHARITIES, json!({ "first": 10 })).await;
        assert_eq!(r.code(), Some("FORBIDDEN"));
    }

    // Capacity on the donation's pickup day: 10 kg, then 4 reserved by a claim, 6 left; the
    // next day is untouched.
    let charity = &mine[0];
    let d = post(&donor, "DAIRY", 4.0, 40.0, 40.0).await.ok()["postDonation"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let day = server.donation_state(&d).await.0.pickup_day().unwrap();
    let capacity = |day: chrono::NaiveDate| {
        let m1 = m1.clone();
        let charity = charity.clone();
        async move {
            let r = m1
                .query(
                    "query($id: ID!, $day: NaiveDate) { charity(id: $id) { reservedKg(day: $day) remainingKg(day: $day) } }",
                    json!({ "id": charity, "day": day }),
                )
                .await;
            let c = r.ok()["charity"].clone();
            (
                c["reservedKg"].as_f64().unwrap(),
                c["remainingKg"].as_f64().unwrap(),
            )
        }
    };
    assert_eq!(capacity(day).await, (0.0, 10.0));
    m1.query(CLAIM, json!({ "d": d, "c": charity })).await.ok();
    assert_eq!(
        capacity(day).await,
        (4.0, 6.0),
        "a claim reserves on its pickup day"
    );
    assert_eq!(capacity(day + Duration::days(1)).await, (0.0, 10.0));
    // myCharities answers the same (each charity from its aggregate).
    let r = m1
        .query(MY_CHARITIES, json!({ "first": 10, "day": day }))
        .await;
    let node = r.ok()["myCharities"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"]["id"] == charity.as_str())
        .unwrap()["node"]
        .clone();
    assert_eq!(
        (node["reservedKg"].as_f64(), node["remainingKg"].as_f64()),
        (Some(4.0), Some(6.0))
    );
    // Without `day`: today (UTC), the same as naming today.
    let today = Utc::now().date_naive();
    let r = m1
        .query(
            "query($id: ID!, $today: NaiveDate) { charity(id: $id) { reservedKg remainingKg t: reservedKg(day: $today) r: remainingKg(day: $today) } }",
            json!({ "id": charity, "today": today }),
        )
        .await;
    let c = r.ok()["charity"].clone();
    if Utc::now().date_naive() == today {
        assert_eq!((&c["reservedKg"], &c["remainingKg"]), (&c["t"], &c["r"]));
    }
}

/// Charities registered before `charity_view.position` existed are listed in order after the
/// projection's rebuild at start (version 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charities_registered_before_the_upgrade_are_listed_after_the_rebuild() {
    let db = TestDb::create(Backend::Sqlite).await;
    let mut mine = vec![];
    {
        let server = start_server(&db).await;
        let m1 = Client::new(server.addr, Some(token("m1", Role::Charity)));
        for i in 0..3 {
            mine.push(
                register(
                    &m1,
                    &format!("C{i}"),
                    1.0,
                    1.0 + i as f64 * 0.01,
                    5.0,
                    &["MEAT"],
                )
                .await,
            );
        }
        eventually(10, "the charities in the read model", || async {
            let r = m1.query(MY_CHARITIES, json!({ "first": 10 })).await;
            (r.ok()["myCharities"]["edges"].as_array().unwrap().len() == 3).then_some(())
        })
        .await;
        // As a version 2 read model left them: no positions.
        let pool = server.store.read_pool();
        sqlx::query("UPDATE charity_view SET position = 0")
            .execute(pool)
            .await
            .unwrap();
        sqlx::query("UPDATE projection_checkpoints SET version = 2 WHERE name = 'donations'")
            .execute(pool)
            .await
            .unwrap();
    }
    let server = start_server(&db).await;
    let m1 = Client::new(server.addr, Some(token("m1", Role::Charity)));
    let (ids, _) = all_pages(&m1, MY_CHARITIES, "myCharities", json!({ "first": 1 })).await;
    mine.reverse();
    assert_eq!(ids, mine);
}
