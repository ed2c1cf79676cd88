//! Closes auctions when `endsAt` passes, and expires donations whose food has expired. Durable across restarts without state of its own:
//! each tick asks the read model which open auctions are due, and the aggregate decides
//! (an auction extended by a late bid answers NotDue and is simply asked again later).

use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use triad_domain::auction::{Auction, AuctionCommand, AuctionError};
use triad_domain::donation::{Donation, DonationCommand};
use triad_domain::Actor;
use triad_eventstore::{AggregateStore, CommandContext, CommandError, EventStore};
use triad_projections::auctions::due_auctions;
use triad_projections::donations::expired_donations;

pub const TICK: Duration = Duration::from_millis(500);

pub fn spawn(
    store: EventStore,
    auctions: Arc<AggregateStore<Auction>>,
    donations: Arc<AggregateStore<Donation>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let system = Actor::system("scheduler");
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match expired_donations(store.read_pool(), Utc::now(), 100).await {
                Ok(ids) => {
                    for id in ids {
                        let context = CommandContext::new(system.clone(), format!("expire:{id}"));
                        if let Err(e) = donations
                            .execute(&id, DonationCommand::Expire { now: Utc::now() }, context)
                            .await
                        {
                            tracing::warn!(donation = %id, error = %e, "scheduler could not expire donation");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduler cannot read expired donations"),
            }
            let due = match due_auctions(store.read_pool(), Utc::now(), 100).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler cannot read due auctions");
                    continue;
                }
            };
            for id in due {
                let command = AuctionCommand::Close {
                    by: system.clone(),
                    now: Utc::now(),
                };
                let context = CommandContext::new(system.clone(), format!("close:{id}"));
                match auctions.execute(&id, command, context).await {
                    Ok(_) => tracing::info!(auction = %id, "auction closed at its end"),
                    // Extended, or already closed by someone else (another replica).
                    Err(CommandError::Rejected(
                        AuctionError::NotDue { .. } | AuctionError::Closed,
                    )) => {}
                    Err(e) => {
                        tracing::warn!(auction = %id, error = %e, "scheduler could not close auction")
                    }
                }
            }
        }
    })
}
