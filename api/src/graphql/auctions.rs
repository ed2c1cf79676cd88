//! Auctions over GraphQL: openAuction, placeBid, closeAuction, auction, auctions,
//! leaderboard, and the bidPlaced subscription.

use super::{caller, correlation_id, require, services};
use crate::errors::{self, auction_error, invalid_input, not_found};
use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use futures::{Stream, StreamExt};
use triad_domain::auction::{
    Auction, AuctionCommand, AuctionEvent, AuctionStatus as DomainStatus, AuctionSummary,
};
use triad_domain::{AuctionId, Cents, ClientBidId, Role};
use triad_eventstore::store::LogFilter;
use triad_eventstore::CommandContext;
use triad_projections::auctions::{self as views, AuctionRow};

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum AuctionStatus {
    Open,
    Sold,
    Unsold,
}

impl AuctionStatus {
    fn as_str(self) -> &'static str {
        match self {
            AuctionStatus::Open => "OPEN",
            AuctionStatus::Sold => "SOLD",
            AuctionStatus::Unsold => "UNSOLD",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "OPEN" => Some(AuctionStatus::Open),
            "SOLD" => Some(AuctionStatus::Sold),
            "UNSOLD" => Some(AuctionStatus::Unsold),
            _ => None,
        }
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Bid {
    pub amount_cents: i64,
    pub bidder_id: ID,
    pub placed_at: Option<DateTime<Utc>>,
}

/// An auction as its readers see it: from the command's own result (placeBid, openAuction)
/// or from the read model (queries).
#[derive(Clone, Debug)]
pub struct AuctionNode {
    id: String,
    seller_id: String,
    title: String,
    status: AuctionStatus,
    starting_price_cents: i64,
    min_increment_cents: i64,
    reserve_price_cents: i64,
    ends_at: DateTime<Utc>,
    highest_bid: Option<Bid>,
    bid_count: i64,
    version: i64,
    winner_id: Option<String>,
    cursor: Option<i64>,
}

fn parse_time(raw: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

impl AuctionNode {
    fn from_summary(s: &AuctionSummary, version: usize) -> Self {
        let winner_id = match (s.status, &s.highest) {
            (DomainStatus::Sold, Some(b)) => Some(b.bidder.to_string()),
            _ => None,
        };
        AuctionNode {
            id: s.id.as_ref().map(|i| i.to_string()).unwrap_or_default(),
            seller_id: s.seller.as_ref().map(|i| i.to_string()).unwrap_or_default(),
            title: s.title.clone(),
            status: match s.status {
                DomainStatus::Sold => AuctionStatus::Sold,
                DomainStatus::Unsold => AuctionStatus::Unsold,
                DomainStatus::Open | DomainStatus::Unopened => AuctionStatus::Open,
            },
            starting_price_cents: s.starting_price.get(),
            min_increment_cents: s.min_increment.get(),
            reserve_price_cents: s.reserve_price.get(),
            ends_at: s.ends_at.unwrap_or_default(),
            highest_bid: s.highest.as_ref().map(|b| Bid {
                amount_cents: b.amount.get(),
                bidder_id: ID(b.bidder.to_string()),
                placed_at: Some(b.placed_at),
            }),
            bid_count: s.bid_count as i64,
            version: version as i64,
            winner_id,
            cursor: None,
        }
    }

    fn from_row(r: AuctionRow) -> Self {
        AuctionNode {
            status: AuctionStatus::parse(&r.status).unwrap_or(AuctionStatus::Open),
            ends_at: parse_time(&r.ends_at),
            highest_bid: match (r.highest_amount_cents, r.highest_bidder_id) {
                (Some(amount_cents), Some(bidder)) => Some(Bid {
                    amount_cents,
                    bidder_id: ID(bidder),
                    placed_at: None,
                }),
                _ => None,
            },
            id: r.auction_id,
            seller_id: r.seller_id,
            title: r.title,
            starting_price_cents: r.starting_price_cents,
            min_increment_cents: r.min_increment_cents,
            reserve_price_cents: r.reserve_price_cents,
            bid_count: r.bid_count,
            version: r.version,
            winner_id: r.winner_id,
            cursor: Some(r.opened_position),
        }
    }
}

#[Object(name = "Auction")]
impl AuctionNode {
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }
    async fn title(&self) -> &str {
        &self.title
    }
    async fn seller_id(&self) -> ID {
        ID(self.seller_id.clone())
    }
    async fn status(&self) -> AuctionStatus {
        self.status
    }
    async fn starting_price_cents(&self) -> i64 {
        self.starting_price_cents
    }
    async fn min_increment_cents(&self) -> i64 {
        self.min_increment_cents
    }
    /// The reserve is the seller's secret: only the seller and admins see it.
    async fn reserve_price_cents(&self, ctx: &Context<'_>) -> Option<i64> {
        caller(ctx)
            .filter(|a| a.role == Role::Admin || a.sub.as_str() == self.seller_id)
            .map(|_| self.reserve_price_cents)
    }
    /// Whether the highest bid meets the reserve (bidders may know that much).
    async fn reserve_met(&self) -> bool {
        self.highest_bid
            .as_ref()
            .is_some_and(|b| b.amount_cents >= self.reserve_price_cents)
    }
    /// The smallest amount the next bid may have.
    async fn minimum_next_bid_cents(&self) -> i64 {
        match &self.highest_bid {
            None => self.starting_price_cents,
            Some(b) => b.amount_cents + self.min_increment_cents,
        }
    }
    async fn ends_at(&self) -> DateTime<Utc> {
        self.ends_at
    }
    async fn highest_bid(&self) -> Option<&Bid> {
        self.highest_bid.as_ref()
    }
    async fn bid_count(&self) -> i64 {
        self.bid_count
    }
    /// The aggregate's version (its last event's sequence number).
    async fn version(&self) -> i64 {
        self.version
    }
    async fn winner_id(&self) -> Option<ID> {
        self.winner_id.clone().map(ID)
    }
    async fn leaderboard(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 10)] top: i32,
    ) -> async_graphql::Result<Vec<LeaderboardEntry>> {
        leaderboard_of(ctx, &self.id, top).await
    }
}

#[derive(SimpleObject, Clone, Debug)]
pub struct LeaderboardEntry {
    pub rank: i32,
    pub bidder_id: ID,
    pub amount_cents: i64,
    pub bid_count: i64,
}

async fn leaderboard_of(
    ctx: &Context<'_>,
    auction_id: &str,
    top: i32,
) -> async_graphql::Result<Vec<LeaderboardEntry>> {
    if !(1..=100).contains(&top) {
        return Err(invalid_input("top must be between 1 and 100"));
    }
    let s = services(ctx)?;
    let rows = views::leaderboard(s.store.read_pool(), auction_id, top as i64)
        .await
        .map_err(errors::internal)?;
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| LeaderboardEntry {
            rank: i as i32 + 1,
            bidder_id: ID(r.bidder_id),
            amount_cents: r.best_amount_cents,
            bid_count: r.bid_count,
        })
        .collect())
}

#[derive(SimpleObject, Clone, Debug)]
pub struct BidResult {
    /// True when the bid is (or, for a repeated clientBidId, already was) the highest.
    pub accepted: bool,
    /// True when this clientBidId had already been placed: nothing new was appended.
    pub duplicate: bool,
    pub auction: AuctionNode,
}

#[derive(InputObject)]
pub struct OpenAuctionInput {
    pub title: String,
    pub starting_price_cents: i64,
    pub min_increment_cents: i64,
    pub reserve_price_cents: i64,
    pub ends_at: DateTime<Utc>,
}

#[derive(InputObject)]
pub struct PlaceBidInput {
    pub auction_id: ID,
    pub amount_cents: i64,
    /// Makes the bid idempotent: the same id from the same dealer is one bid.
    pub client_bid_id: Option<ID>,
}

fn cents(field: &'static str, value: i64) -> async_graphql::Result<Cents> {
    Cents::parse(field, value).map_err(|e| invalid_input(e.to_string()))
}

fn auction_id(raw: &ID) -> async_graphql::Result<AuctionId> {
    AuctionId::parse(raw.as_str()).map_err(|_| not_found(format!("no auction {:?}", raw.as_str())))
}

/// The kind in `auctions` cursors.
const CURSOR: &str = "auction";

#[derive(Default)]
pub struct AuctionQuery;

#[Object]
impl AuctionQuery {
    async fn auction(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<AuctionNode>> {
        let s = services(ctx)?;
        let row = views::get_auction(s.store.read_pool(), id.as_str())
            .await
            .map_err(errors::internal)?;
        Ok(row.map(AuctionNode::from_row))
    }

    /// Auctions, newest first (a Relay connection).
    async fn auctions(
        &self,
        ctx: &Context<'_>,
        status: Option<AuctionStatus>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, AuctionNode>> {
        let first = super::page_size(first)?;
        let before = after
            .as_deref()
            .map(|cursor| super::decode_cursor(CURSOR, cursor))
            .transpose()?;
        let s = services(ctx)?;
        let (rows, more) = views::list_auctions(
            s.store.read_pool(),
            status.map(AuctionStatus::as_str),
            first,
            before,
        )
        .await
        .map_err(errors::internal)?;
        Ok(super::position_connection(
            CURSOR,
            before,
            more,
            rows.into_iter().map(|r| {
                let node = AuctionNode::from_row(r);
                (node.cursor.unwrap_or_default(), node)
            }),
        ))
    }

    async fn leaderboard(
        &self,
        ctx: &Context<'_>,
        auction_id: ID,
        #[graphql(default = 10)] top: i32,
    ) -> async_graphql::Result<Vec<LeaderboardEntry>> {
        leaderboard_of(ctx, auction_id.as_str(), top).await
    }
}

#[derive(Default)]
pub struct AuctionMutation;

#[Object]
impl AuctionMutation {
    /// Opens an auction owned by the calling seller.
    async fn open_auction(
        &self,
        ctx: &Context<'_>,
        input: OpenAuctionInput,
    ) -> async_graphql::Result<AuctionNode> {
        let actor = require(ctx, &[Role::Seller, Role::Admin])?.clone();
        let command = AuctionCommand::Open {
            auction_id: AuctionId::parse(uuid::Uuid::now_v7().to_string())
                .map_err(errors::internal)?,
            seller: actor.sub.clone(),
            title: input.title,
            starting_price: cents("startingPriceCents", input.starting_price_cents)?,
            min_increment: cents("minIncrementCents", input.min_increment_cents)?,
            reserve_price: cents("reservePriceCents", input.reserve_price_cents)?,
            ends_at: input.ends_at,
            now: Utc::now(),
        };
        let AuctionCommand::Open { auction_id, .. } = &command else {
            return Err(errors::internal("open command expected"));
        };
        let id = auction_id.to_string();
        let s = services(ctx)?;
        let outcome = s
            .auctions
            .execute(
                &id,
                command,
                CommandContext::new(actor, correlation_id(ctx)),
            )
            .await
            .map_err(auction_error)?;
        Ok(AuctionNode::from_summary(&outcome.state, outcome.version))
    }

    /// Places a bid; answers with the auction's new state and version as soon as the bid is
    /// durable (clients render it at once and reconcile from `bidPlaced`).
    async fn place_bid(
        &self,
        ctx: &Context<'_>,
        input: PlaceBidInput,
    ) -> async_graphql::Result<BidResult> {
        let actor = require(ctx, &[Role::Dealer])?.clone();
        let id = auction_id(&input.auction_id)?;
        let amount = cents("amountCents", input.amount_cents)?;
        if amount.get() == 0 {
            return Err(invalid_input("amountCents must be positive"));
        }
        let client_bid_id = input
            .client_bid_id
            .map(|c| ClientBidId::parse(c.0).map_err(|e| invalid_input(e.to_string())))
            .transpose()?;
        let command = AuctionCommand::PlaceBid {
            bidder: actor.sub.clone(),
            amount,
            client_bid_id,
            now: Utc::now(),
        };
        let mut context = CommandContext::new(actor, correlation_id(ctx));
        if let AuctionCommand::PlaceBid {
            client_bid_id: Some(c),
            ..
        } = &command
        {
            context.command_id = format!("bid:{}:{}", context.actor.sub, c);
        }
        let s = services(ctx)?;
        let outcome = s
            .auctions
            .execute(id.as_str(), command, context)
            .await
            .map_err(auction_error)?;
        metrics::counter!("triad_bids_total", "outcome" => if outcome.events.is_empty() { "duplicate" } else { "accepted" }).increment(1);
        Ok(BidResult {
            accepted: true,
            duplicate: outcome.events.is_empty(),
            auction: AuctionNode::from_summary(&outcome.state, outcome.version),
        })
    }

    /// Closes an auction now (its seller or an admin); SOLD or UNSOLD by the reserve.
    async fn close_auction(
        &self,
        ctx: &Context<'_>,
        auction_id: ID,
    ) -> async_graphql::Result<AuctionNode> {
        let actor = require(ctx, &[Role::Seller, Role::Admin])?.clone();
        let id = self::auction_id(&auction_id)?;
        let s = services(ctx)?;
        let outcome = s
            .auctions
            .execute(
                id.as_str(),
                AuctionCommand::Close {
                    by: actor.clone(),
                    now: Utc::now(),
                },
                CommandContext::new(actor, correlation_id(ctx)),
            )
            .await
            .map_err(auction_error)?;
        Ok(AuctionNode::from_summary(&outcome.state, outcome.version))
    }
}

/// One accepted bid, as pushed to watchers.
#[derive(SimpleObject, Clone, Debug)]
pub struct BidPlaced {
    pub auction_id: ID,
    pub amount_cents: i64,
    pub bidder_id: ID,
    /// Global log position: pass it as `after` to resume without gaps or duplicates.
    pub position: i64,
    pub placed_at: DateTime<Utc>,
    /// The auction's end after this bid (later than before when it extended the auction).
    pub ends_at: DateTime<Utc>,
    /// The auction's version after this bid.
    pub version: i64,
}

/// The calling dealer has just been outbid.
#[derive(SimpleObject, Clone, Debug)]
pub struct Outbid {
    pub auction_id: ID,
    /// The calling dealer's bid that is no longer the highest.
    pub your_amount_cents: i64,
    /// The new highest bid.
    pub amount_cents: i64,
    pub position: i64,
    pub placed_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct AuctionSubscription;

/// The log filter for an existing auction's bids (NOT_FOUND for an unknown auction).
async fn bids_of(s: &super::Services, auction_id: &ID) -> async_graphql::Result<LogFilter> {
    let id = self::auction_id(auction_id)?;
    let (state, _) = s
        .auctions
        .load(id.as_str())
        .await
        .map_err(errors::internal)?;
    if state.id.is_none() {
        return Err(not_found(format!("no auction {:?}", id.as_str())));
    }
    Ok(LogFilter {
        aggregate_type: Some(Auction::TYPE.to_string()),
        aggregate_id: Some(id.to_string()),
        event_types: vec!["BidPlaced".to_string()],
    })
}

#[Subscription]
impl AuctionSubscription {
    /// Every accepted bid on one auction, in order. With `after` (a position from an earlier
    /// event), first replays what was missed, then continues live.
    async fn bid_placed(
        &self,
        ctx: &Context<'_>,
        auction_id: ID,
        after: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<BidPlaced>>> {
        let s = services(ctx)?;
        let filter = bids_of(s, &auction_id).await?;
        let events = super::live::events(ctx, &s.tail, after, filter)?;
        Ok(events.map(|item| {
            let recorded = item?;
            match recorded
                .decode::<AuctionEvent>()
                .map_err(errors::internal)?
            {
                AuctionEvent::BidPlaced {
                    bidder,
                    amount,
                    placed_at,
                    ends_at,
                    ..
                } => Ok(BidPlaced {
                    auction_id: ID(recorded.aggregate_id.clone()),
                    amount_cents: amount.get(),
                    bidder_id: ID(bidder.to_string()),
                    position: recorded.position,
                    placed_at,
                    ends_at,
                    version: recorded.sequence,
                }),
                _ => Err(errors::internal("unexpected event in bid stream")),
            }
        }))
    }

    /// Tells a dealer (and only that dealer) each time their highest bid is beaten.
    async fn outbid(
        &self,
        ctx: &Context<'_>,
        auction_id: ID,
        after: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Outbid>>> {
        let me = require(ctx, &[Role::Dealer])?.sub.clone();
        let s = services(ctx)?;
        let filter = bids_of(s, &auction_id).await?;
        let window = super::live::window(ctx, &s.tail, after)?;
        // Who held the highest bid when the window starts.
        let mut holder: Option<(String, i64)> = None;
        let mut from = 1;
        'scan: loop {
            let page = s
                .store
                .read(from, 1_000, &filter)
                .await
                .map_err(errors::internal)?;
            for e in &page {
                if e.position > window.from {
                    break 'scan;
                }
                if let AuctionEvent::BidPlaced { bidder, amount, .. } =
                    e.decode::<AuctionEvent>().map_err(errors::internal)?
                {
                    holder = Some((bidder.to_string(), amount.get()));
                }
            }
            match page.last() {
                Some(last) if page.len() == 1_000 => from = last.position + 1,
                _ => break,
            }
        }
        let me = me.to_string();
        Ok(window.stream(&s.tail, filter).filter_map(move |item| {
            let result = (|| {
                let recorded = item?;
                let AuctionEvent::BidPlaced {
                    bidder,
                    amount,
                    placed_at,
                    ..
                } = recorded
                    .decode::<AuctionEvent>()
                    .map_err(errors::internal)?
                else {
                    return Ok(None);
                };
                let previous = holder.replace((bidder.to_string(), amount.get()));
                Ok(match previous {
                    Some((who, mine)) if who == me && bidder.as_str() != me => Some(Outbid {
                        auction_id: ID(recorded.aggregate_id.clone()),
                        your_amount_cents: mine,
                        amount_cents: amount.get(),
                        position: recorded.position,
                        placed_at,
                    }),
                    _ => None,
                })
            })();
            futures::future::ready(result.transpose())
        }))
    }
}
