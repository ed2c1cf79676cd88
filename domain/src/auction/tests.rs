use super::*;
use chrono::TimeZone;
use proptest::prelude::*;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).single().unwrap()
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn open_cmd(ends_in: i64) -> AuctionCommand {
    AuctionCommand::Open {
        auction_id: AuctionId::parse("a1").unwrap(),
        seller: user("seller"),
        title: "1998 Volvo V70".into(),
        starting_price: Cents::parse("p", 1_000).unwrap(),
        min_increment: Cents::parse("p", 100).unwrap(),
        reserve_price: Cents::parse("p", 5_000).unwrap(),
        ends_at: t(ends_in),
        now: t(0),
    }
}

fn bid(who: &str, amount: i64, at: i64) -> AuctionCommand {
    AuctionCommand::PlaceBid {
        bidder: user(who),
        amount: Cents::parse("a", amount).unwrap(),
        client_bid_id: None,
        now: t(at),
    }
}

/// Decides and applies, as the executor does.
fn exec(state: &mut Auction, cmd: &AuctionCommand) -> Result<Vec<AuctionEvent>, AuctionError> {
    let events = state.decide(cmd)?;
    for e in &events {
        state.apply(e.clone());
    }
    Ok(events)
}

fn opened() -> Auction {
    let mut a = Auction::default();
    exec(&mut a, &open_cmd(3_600)).unwrap();
    a
}

#[test]
fn first_bid_needs_starting_price_then_increment() {
    let mut a = opened();
    assert_eq!(
        exec(&mut a, &bid("d1", 999, 1)),
        Err(AuctionError::BidTooLow {
            amount: 999,
            minimum: 1_000
        })
    );
    assert!(exec(&mut a, &bid("d1", 1_000, 1)).is_ok());
    assert_eq!(
        exec(&mut a, &bid("d2", 1_099, 2)).unwrap_err().code(),
        "BID_TOO_LOW"
    );
    assert!(exec(&mut a, &bid("d2", 1_100, 2)).is_ok());
}

#[test]
fn equal_amounts_at_the_same_instant_only_one_wins() {
    let mut a = opened();
    assert!(exec(&mut a, &bid("d1", 2_000, 5)).is_ok());
    assert_eq!(
        exec(&mut a, &bid("d2", 2_000, 5)).unwrap_err().code(),
        "BID_TOO_LOW"
    );
}

#[test]
fn seller_cannot_bid_and_closed_rejects() {
    let mut a = opened();
    assert_eq!(
        exec(&mut a, &bid("seller", 5_000, 1)),
        Err(AuctionError::OwnAuction)
    );
    assert_eq!(
        exec(&mut a, &bid("d1", 5_000, 3_600)),
        Err(AuctionError::Closed)
    );
    assert_eq!(
        Auction::default().decide(&bid("d1", 5_000, 1)),
        Err(AuctionError::NotFound)
    );
}

#[test]
fn anti_sniping_extends_end() {
    let mut a = opened();
    let events = exec(&mut a, &bid("d1", 1_000, 3_600 - 60)).unwrap();
    match &events[0] {
        AuctionEvent::BidPlaced { ends_at, .. } => assert_eq!(*ends_at, t(3_600 + 120)),
        other => panic!("unexpected {other:?}"),
    }
    // Outside the window nothing moves.
    let mut b = opened();
    exec(&mut b, &bid("d1", 1_000, 100)).unwrap();
    assert_eq!(b.ends_at, Some(t(3_600)));
}

#[test]
fn reserve_decides_sold_or_unsold() {
    let system = Actor::system("scheduler");
    let mut a = opened();
    exec(&mut a, &bid("d1", 4_000, 1)).unwrap();
    assert_eq!(
        exec(
            &mut a,
            &AuctionCommand::Close {
                by: system.clone(),
                now: t(10)
            }
        ),
        Err(AuctionError::NotDue { ends_at: t(3_600) })
    );
    exec(
        &mut a,
        &AuctionCommand::Close {
            by: system.clone(),
            now: t(3_600),
        },
    )
    .unwrap();
    assert_eq!(a.status, AuctionStatus::Unsold);

    let mut b = opened();
    exec(&mut b, &bid("d1", 5_000, 1)).unwrap();
    let seller = Actor {
        sub: user("seller"),
        role: Role::Seller,
    };
    let stranger = Actor {
        sub: user("other"),
        role: Role::Seller,
    };
    assert_eq!(
        exec(
            &mut b,
            &AuctionCommand::Close {
                by: stranger,
                now: t(5)
            }
        ),
        Err(AuctionError::Forbidden)
    );
    exec(
        &mut b,
        &AuctionCommand::Close {
            by: seller,
            now: t(5),
        },
    )
    .unwrap();
    assert_eq!(b.status, AuctionStatus::Sold);
    assert_eq!(
        b.outcome,
        Some(CloseOutcome::Sold {
            winner: user("d1"),
            amount: Cents::parse("a", 5_000).unwrap()
        })
    );
}

#[test]
fn repeated_client_bid_id_is_one_bid() {
    let mut a = opened();
    let cmd = AuctionCommand::PlaceBid {
        bidder: user("d1"),
        amount: Cents::parse("a", 1_000).unwrap(),
        client_bid_id: Some(ClientBidId::parse("c-1").unwrap()),
        now: t(1),
    };
    assert_eq!(exec(&mut a, &cmd).unwrap().len(), 1);
    assert_eq!(exec(&mut a, &cmd).unwrap().len(), 0);
    assert_eq!(a.bid_count, 1);
    // The same client id from another dealer is another bid.
    let other = AuctionCommand::PlaceBid {
        bidder: user("d2"),
        amount: Cents::parse("a", 1_100).unwrap(),
        client_bid_id: Some(ClientBidId::parse("c-1").unwrap()),
        now: t(2),
    };
    assert_eq!(exec(&mut a, &other).unwrap().len(), 1);
}

#[test]
fn events_round_trip_through_json() {
    let mut a = opened();
    let events = exec(&mut a, &bid("d1", 6_000, 1)).unwrap();
    for e in events {
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(serde_json::from_value::<AuctionEvent>(json).unwrap(), e);
    }
}

#[derive(Debug, Clone)]
enum Step {
    Bid { bidder: u8, amount: i64, dt: i64 },
    Close { dt: i64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0u8..6, 0i64..20_000, 0i64..400).prop_map(|(bidder, amount, dt)| Step::Bid { bidder, amount, dt }),
        1 => (0i64..4_000).prop_map(|dt| Step::Close { dt }),
    ]
}

proptest! {
    /// Over random command sequences: the highest bid never decreases, accepted bids strictly
    /// increase by at least the increment, and replaying the emitted events gives the same state.
    #[test]
    fn auction_invariants(steps in proptest::collection::vec(step(), 1..80)) {
        let mut state = opened();
        let mut log: Vec<AuctionEvent> = vec![];
        let mut now = 0i64;
        let mut last_accepted: Option<i64> = None;
        for s in steps {
            let before = state.highest.as_ref().map(|b| b.amount);
            let cmd = match s {
                Step::Bid { bidder, amount, dt } => { now += dt; bid(if bidder == 0 { "seller" } else { ["d1","d2","d3","d4","d5"][bidder as usize - 1] }, amount, now) }
                Step::Close { dt } => { now += dt; AuctionCommand::Close { by: Actor::system("scheduler"), now: t(now) } }
            };
            if let Ok(events) = exec(&mut state, &cmd) {
                for e in &events {
                    if let AuctionEvent::BidPlaced { amount, .. } = e {
                        if let Some(prev) = last_accepted {
                            prop_assert!(amount.get() >= prev + 100);
                        } else {
                            prop_assert!(amount.get() >= 1_000);
                        }
                        last_accepted = Some(amount.get());
                    }
                }
                log.extend(events);
            }
            let after = state.highest.as_ref().map(|b| b.amount);
            prop_assert!(after >= before);
        }
        let mut replayed = Auction::default();
        replayed.apply(AuctionEvent::AuctionOpened {
            auction_id: AuctionId::parse("a1").unwrap(),
            seller: user("seller"),
            title: "1998 Volvo V70".into(),
            starting_price: Cents::parse("p", 1_000).unwrap(),
            min_increment: Cents::parse("p", 100).unwrap(),
            reserve_price: Cents::parse("p", 5_000).unwrap(),
            ends_at: t(3_600),
            opened_at: t(0),
            has_reserve: true,
        });
        for e in log { replayed.apply(e); }
        prop_assert_eq!(replayed, state);
    }
}
