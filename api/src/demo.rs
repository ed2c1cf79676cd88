//! A small demo data set for `triad serve --demo`: a few open auctions with bids, loaded
//! through the same commands as real traffic, only into an empty store.

use chrono::{Duration, Utc};
use std::time::Duration as StdDuration;
use triad_api::auth::Auth;
use triad_api::Server;
use triad_domain::auction::AuctionCommand;
use triad_domain::{Actor, AuctionId, Cents, Role, UserId};
use triad_eventstore::CommandContext;

pub async fn load(server: &Server, auth: &Auth) -> anyhow::Result<()> {
    let seller = Actor {
        sub: UserId::parse("demo-seller")?,
        role: Role::Seller,
    };
    let dealers = ["demo-dealer-1", "demo-dealer-2", "demo-dealer-3"];
    if server.store.head().await? == 0 {
        let cars = [
            ("2019 Toyota Corolla, 48k km", 800_000, 1_100_000),
            ("2016 BMW 320d Touring", 1_200_000, 1_600_000),
            ("2021 Tesla Model 3 LR", 2_500_000, 3_100_000),
        ];
        for (i, (title, start, reserve)) in cars.into_iter().enumerate() {
            let id = AuctionId::parse(format!("demo-auction-{}", i + 1))?;
            let now = Utc::now();
            let open = AuctionCommand::Open {
                auction_id: id.clone(),
                seller: seller.sub.clone(),
                title: title.to_string(),
                starting_price: Cents::parse("start", start)?,
                min_increment: Cents::parse("inc", 10_000)?,
                reserve_price: Cents::parse("reserve", reserve)?,
                ends_at: now + Duration::hours(24 * (i as i64 + 1)),
                now,
            };
            server
                .auctions
                .execute(
                    id.as_str(),
                    open,
                    CommandContext::new(seller.clone(), "demo"),
                )
                .await?;
            for (n, dealer) in dealers.iter().enumerate() {
                let bidder = Actor {
                    sub: UserId::parse(*dealer)?,
                    role: Role::Dealer,
                };
                let bid = AuctionCommand::PlaceBid {
                    bidder: bidder.sub.clone(),
                    amount: Cents::parse("amount", start + 10_000 * n as i64)?,
                    client_bid_id: None,
                    now: Utc::now(),
                };
                server
                    .auctions
                    .execute(id.as_str(), bid, CommandContext::new(bidder, "demo"))
                    .await?;
            }
        }
        eprintln!("triad: demo data loaded (3 auctions: demo-auction-1..3)");
    }
    let day = StdDuration::from_secs(86_400);
    for (sub, role) in [
        ("demo-seller", Role::Seller),
        ("demo-dealer-1", Role::Dealer),
        ("demo-admin", Role::Admin),
    ] {
        eprintln!(
            "triad: dev token {sub} ({}): {}",
            role.as_str(),
            auth.mint(&UserId::parse(sub)?, role, day)?
        );
    }
    Ok(())
}
