//! The global log: many concurrent writers and a tailing reader; no event skipped or
//! duplicated, positions in commit order; on PostgreSQL and SQLite.

use futures::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use triad_domain::auction::{Auction, AuctionCommand};
use triad_domain::{Actor, AuctionId, Cents, Role, UserId};
use triad_eventstore::store::LogFilter;
use triad_eventstore::{AggregateStore, CommandContext, EventStore};
use triad_tests::{Backend, TestDb};

const WRITERS: usize = 16;
const BIDS_PER_WRITER: usize = 40;

fn open(id: &str) -> AuctionCommand {
    let now = chrono::Utc::now();
    AuctionCommand::Open {
        auction_id: AuctionId::parse(id).unwrap(),
        seller: UserId::parse("seller").unwrap(),
        title: "car".into(),
        starting_price: Cents::parse("s", 100).unwrap(),
        min_increment: Cents::parse("i", 1).unwrap(),
        reserve_price: Cents::parse("r", 0).unwrap(),
        ends_at: now + chrono::Duration::hours(1),
        now,
    }
}

fn bid(amount: i64) -> AuctionCommand {
    AuctionCommand::PlaceBid {
        bidder: UserId::parse("dealer").unwrap(),
        amount: Cents::parse("a", amount).unwrap(),
        client_bid_id: None,
        now: chrono::Utc::now(),
    }
}

fn ctx() -> CommandContext {
    CommandContext::new(
        Actor {
            sub: UserId::parse("dealer").unwrap(),
            role: Role::Dealer,
        },
        "test",
    )
}

/// A transaction that inserts before others but commits after them: with positions taken
/// at INSERT (bigserial) a reader that already passed later positions would skip it.
async fn slow_writer_pg(url: &str, started: tokio::sync::oneshot::Sender<()>) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ('Probe', 'slow', 1, 'Probed', '1', '{}', '{}')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let _ = started.send(());
    tokio::time::sleep(Duration::from_millis(700)).await;
    tx.commit().await.unwrap();
}

async fn no_event_skipped_or_duplicated(backend: Backend) {
    let db = TestDb::create(backend).await;
    let store = EventStore::connect(&db.url.parse().unwrap()).await.unwrap();
    let auctions = Arc::new(AggregateStore::<Auction>::new(store.clone()));

    // The reader tails from the start while writers run.
    let mut tail = store.subscribe_all(1);
    let expected = WRITERS * (1 + BIDS_PER_WRITER) + usize::from(backend == Backend::Postgres);

    let slow = if backend == Backend::Postgres {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let url = db.url.clone();
        let h = tokio::spawn(async move { slow_writer_pg(&url, tx).await });
        rx.await.unwrap();
        Some(h)
    } else {
        None
    };

    let mut writers = vec![];
    for w in 0..WRITERS {
        let auctions = auctions.clone();
        writers.push(tokio::spawn(async move {
            let id = format!("log-{w}");
            auctions.execute(&id, open(&id), ctx()).await.unwrap();
            for i in 0..BIDS_PER_WRITER {
                auctions
                    .execute(&id, bid(100 + i as i64), ctx())
                    .await
                    .unwrap();
            }
        }));
    }

    let mut seen = Vec::with_capacity(expected);
    while seen.len() < expected {
        let next = tokio::time::timeout(Duration::from_secs(30), tail.next())
            .await
            .expect("the tail delivers every event in time")
            .expect("stream never ends")
            .expect("read succeeds");
        seen.push(next);
    }
    for w in writers {
        w.await.unwrap();
    }
    if let Some(h) = slow {
        h.await.unwrap();
    }
    // Nothing beyond the expected events arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), tail.next())
            .await
            .is_err()
    );

    let positions: Vec<i64> = seen.iter().map(|e| e.position).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions strictly increase"
    );
    let keys: HashSet<(String, i64)> = seen
        .iter()
        .map(|e| (e.aggregate_id.clone(), e.sequence))
        .collect();
    assert_eq!(keys.len(), expected, "no duplicates");
    for w in 0..WRITERS {
        let id = format!("log-{w}");
        let seqs: Vec<i64> = seen
            .iter()
            .filter(|e| e.aggregate_id == id)
            .map(|e| e.sequence)
            .collect();
        assert_eq!(
            seqs,
            (1..=(1 + BIDS_PER_WRITER as i64)).collect::<Vec<_>>(),
            "per-aggregate order for {id}"
        );
    }
    if backend == Backend::Postgres {
        assert!(
            seen.iter().any(|e| e.aggregate_id == "slow"),
            "the slow transaction's event was not skipped"
        );
    }
    // A fresh read of the whole log agrees with what the tail saw.
    let all = store.read_all(1, 100_000).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        positions
    );
    // Every event carries its metadata.
    for e in all.iter().filter(|e| e.aggregate_type == "Auction") {
        let m = e.metadata().expect("metadata");
        assert_eq!(
            uuid::Uuid::parse_str(&m.event_id)
                .unwrap()
                .get_version_num(),
            7
        );
        assert_eq!(m.actor_role, "dealer");
        assert!(!m.command_id.is_empty() && !m.correlation_id.is_empty());
    }
    // Filtered reads see one aggregate only.
    let one = store
        .read(1, 1_000, &LogFilter::aggregate("Auction", "log-3"))
        .await
        .unwrap();
    assert_eq!(one.len(), 1 + BIDS_PER_WRITER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_log_never_skips() {
    no_event_skipped_or_duplicated(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_log_never_skips() {
    no_event_skipped_or_duplicated(Backend::Sqlite).await;
}

/// Two executors (two processes' worth) racing on one aggregate: conflicts are retried, so
/// every valid bid is decided on its merits and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_conflicts_between_processes_are_retried() {
    let db = TestDb::create(Backend::Postgres).await;
    let url = db.url.parse().unwrap();
    let a = Arc::new(AggregateStore::<Auction>::new(
        EventStore::connect(&url).await.unwrap(),
    ));
    let b = Arc::new(AggregateStore::<Auction>::new(
        EventStore::connect(&url).await.unwrap(),
    ));
    a.execute("hot", open("hot"), ctx()).await.unwrap();
    let mut tasks = vec![];
    for i in 0..60i64 {
        let exec = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            // Each amount is unique and a multiple of the increment above the start.
            exec.execute("hot", bid(1_000 + i), ctx()).await
        }));
    }
    let mut accepted = vec![];
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(o) => accepted.push((o.version, 1_000 + i as i64)),
            Err(triad_eventstore::CommandError::Rejected(
                triad_domain::auction::AuctionError::BidTooLow { .. },
            )) => {}
            Err(e) => panic!("a bid was lost to a race: {e}"),
        }
    }
    accepted.sort();
    let amounts: Vec<i64> = accepted.iter().map(|(_, a)| *a).collect();
    assert!(
        amounts.windows(2).all(|w| w[0] < w[1]),
        "accepted amounts increase in version order"
    );
    assert_eq!(amounts.last(), Some(&1_059), "the largest bid always wins");
    let (state, version) = a.load("hot").await.unwrap();
    triad_tests::settled(a.event_store()).await;
    assert_eq!(state.highest.unwrap().amount.get(), 1_059);
    assert_eq!(version, 1 + amounts.len());
}

/// Two processes over one log, each with its own cached copy of a charity (capacity: one
/// reservation). Whichever cache is behind, a decision must be the one the whole log makes:
/// not a refusal on a stale "full", not a silent no-op on a stale "not held", not an
/// acceptance on a stale "free".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_cache_never_decides_a_command() {
    use triad_domain::donation::{Charity, CharityCommand, DonationError, FoodType};
    use triad_domain::geo::GeoPoint;
    use triad_eventstore::CommandError;
    let db = TestDb::create(Backend::Postgres).await;
    let url = db.url.parse().unwrap();
    let a = AggregateStore::<Charity>::new(EventStore::connect(&url).await.unwrap());
    let b = AggregateStore::<Charity>::new(EventStore::connect(&url).await.unwrap());
    let day = chrono::Utc::now().date_naive();
    let reserve = |donation: &str| CharityCommand::Reserve {
        donation_id: donation.into(),
        day,
        kg: 10.0,
        food_type: FoodType::Produce,
    };
    let register = CharityCommand::Register {
        charity_id: "c1".into(),
        manager: UserId::parse("manager").unwrap(),
        name: "Food bank".into(),
        location: GeoPoint::parse(48.85, 2.35).unwrap(),
        capacity_kg: 10.0,
        accepts: vec![FoodType::Produce],
        pickup_hours: None,
        now: chrono::Utc::now(),
    };
    a.execute("c1", register, ctx()).await.unwrap();
    a.execute("c1", reserve("d1"), ctx()).await.unwrap();
    // A's cache: full. B loads, then frees the room.
    let release = CharityCommand::Release {
        donation_id: "d1".into(),
        day,
    };
    b.execute("c1", release, ctx()).await.unwrap();
    a.execute("c1", reserve("d2"), ctx())
        .await
        .expect("the room B freed is there, whatever A's cache says");
    // Now B's cache is behind (it has not seen d2): releasing d2 must not be a no-op on B's
    // belief that d2 holds nothing, and d3 must then get the room d2 held.
    b.execute(
        "c1",
        CharityCommand::Release {
            donation_id: "d2".into(),
            day,
        },
        ctx(),
    )
    .await
    .unwrap();
    b.execute("c1", reserve("d3"), ctx()).await.unwrap();
    // A's cache is behind again (it believes d2 holds the room): d4 is refused, for d3.
    let refused = a.execute("c1", reserve("d4"), ctx()).await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Rejected(
                DonationError::CapacityExceeded { .. }
            ))
        ),
        "d3 holds the room: {refused:?}"
    );
    let (state, version) = a.load("c1").await.unwrap();
    assert_eq!(
        version, 6,
        "register, d1, release, d2, release, d3: {state:?}"
    );
}
