//! The Auction aggregate: dealers bid on one vehicle until `ends_at`.
//!
//! Invariants (each enforced in [`Auction::decide`]):
//! - the first bid is at least the starting price; every later bid exceeds the highest by at
//!   least the minimum increment, so two equal amounts can never both be accepted;
//! - bids only while open and before `ends_at`; a seller never bids on their own auction;
//! - a bid within [`ANTI_SNIPING_WINDOW`] of the end extends `ends_at` by that window;
//! - closing decides SOLD (highest bid at or above the reserve) or UNSOLD;
//! - a repeated `(bidder, client_bid_id)` is the same bid: decided once, never appended twice.

use crate::actor::{Actor, Role};
use crate::decider::Decider;
use crate::ids::{AuctionId, ClientBidId, UserId};
use crate::money::Cents;
use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A bid that lands this close to the end pushes the end back by the same amount.
pub const ANTI_SNIPING_WINDOW: Duration = Duration::minutes(2);
pub const MAX_TITLE_LEN: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuctionStatus {
    /// No `AuctionOpened` yet: the aggregate does not exist.
    #[default]
    Unopened,
    Open,
    Sold,
    Unsold,
}

impl AuctionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AuctionStatus::Unopened => "UNOPENED",
            AuctionStatus::Open => "OPEN",
            AuctionStatus::Sold => "SOLD",
            AuctionStatus::Unsold => "UNSOLD",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    pub bidder: UserId,
    pub amount: Cents,
    pub placed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuctionCommand {
    Open {
        auction_id: AuctionId,
        seller: UserId,
        title: String,
        starting_price: Cents,
        min_increment: Cents,
        reserve_price: Cents,
        ends_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    PlaceBid {
        bidder: UserId,
        amount: Cents,
        client_bid_id: Option<ClientBidId>,
        now: DateTime<Utc>,
    },
    /// By the seller or an admin at any time, or by the scheduler once `ends_at` has passed.
    Close { by: Actor, now: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "outcome", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CloseOutcome {
    Sold { winner: UserId, amount: Cents },
    Unsold { highest: Option<Cents> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum AuctionEvent {
    AuctionOpened {
        auction_id: AuctionId,
        seller: UserId,
        title: String,
        starting_price: Cents,
        min_increment: Cents,
        reserve_price: Cents,
        ends_at: DateTime<Utc>,
        opened_at: DateTime<Utc>,
        /// Version 2: whether a reserve applies (version 1 rows get it from the reserve
        /// price, see `crate::upcasters`).
        has_reserve: bool,
    },
    BidPlaced {
        bidder: UserId,
        amount: Cents,
        client_bid_id: Option<ClientBidId>,
        placed_at: DateTime<Utc>,
        /// `ends_at` after this bid (later than before when the bid extended the auction).
        ends_at: DateTime<Utc>,
    },
    AuctionClosed {
        #[serde(flatten)]
        outcome: CloseOutcome,
        closed_at: DateTime<Utc>,
    },
}

impl AuctionEvent {
    pub const TYPES: [&'static str; 3] = ["AuctionOpened", "BidPlaced", "AuctionClosed"];
}

impl DomainEvent for AuctionEvent {
    fn event_type(&self) -> String {
        match self {
            AuctionEvent::AuctionOpened { .. } => "AuctionOpened",
            AuctionEvent::BidPlaced { .. } => "BidPlaced",
            AuctionEvent::AuctionClosed { .. } => "AuctionClosed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        crate::catalog::version_of(&self.event_type()).to_string()
    }
}

/// Why a command was refused. Each maps to one stable wire code (`code()`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuctionError {
    #[error("auction not found")]
    NotFound,
    #[error("auction already exists")]
    AlreadyOpened,
    #[error("bid of {amount} cents is too low: at least {minimum} cents required")]
    BidTooLow { amount: i64, minimum: i64 },
    #[error("auction is closed")]
    Closed,
    #[error("a seller cannot bid on their own auction")]
    OwnAuction,
    #[error("only the seller or an admin may close this auction before it ends")]
    Forbidden,
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("auction ends at {ends_at}; it cannot be closed by the scheduler before then")]
    NotDue { ends_at: DateTime<Utc> },
}

impl AuctionError {
    pub fn code(&self) -> &'static str {
        match self {
            AuctionError::NotFound => "NOT_FOUND",
            AuctionError::AlreadyOpened => "CONFLICT",
            AuctionError::BidTooLow { .. } => "BID_TOO_LOW",
            AuctionError::Closed => "AUCTION_CLOSED",
            AuctionError::OwnAuction => "OWN_AUCTION",
            AuctionError::Forbidden => "FORBIDDEN",
            AuctionError::InvalidInput(_) => "INVALID_INPUT",
            AuctionError::NotDue { .. } => "CONFLICT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Auction {
    pub id: Option<AuctionId>,
    pub status: AuctionStatus,
    pub seller: Option<UserId>,
    pub title: String,
    pub starting_price: Cents,
    pub min_increment: Cents,
    pub reserve_price: Cents,
    pub ends_at: Option<DateTime<Utc>>,
    pub highest: Option<Bid>,
    pub bid_count: u64,
    pub outcome: Option<CloseOutcome>,
    /// `bidder -> client_bid_id -> amount` of every accepted bid that carried a client id.
    pub client_bids: HashMap<UserId, HashMap<ClientBidId, Cents>>,
}

impl Auction {
    /// The smallest amount the next bid may have.
    pub fn minimum_next_bid(&self) -> Cents {
        match &self.highest {
            None => self.starting_price,
            Some(bid) => bid.amount.plus(self.min_increment),
        }
    }

    fn decide_open(&self, command: &AuctionCommand) -> Result<Vec<AuctionEvent>, AuctionError> {
        let AuctionCommand::Open {
            auction_id,
            seller,
            title,
            starting_price,
            min_increment,
            reserve_price,
            ends_at,
            now,
        } = command
        else {
            return Err(AuctionError::InvalidInput("not an open command".into()));
        };
        if self.status != AuctionStatus::Unopened {
            return Err(AuctionError::AlreadyOpened);
        }
        let title = title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE_LEN {
            return Err(AuctionError::InvalidInput(format!(
                "title must have 1 to {MAX_TITLE_LEN} characters"
            )));
        }
        if min_increment.get() < 1 {
            return Err(AuctionError::InvalidInput(
                "minIncrementCents must be at least 1".into(),
            ));
        }
        if starting_price.get() < 1 {
            return Err(AuctionError::InvalidInput(
                "startingPriceCents must be at least 1".into(),
            ));
        }
        if ends_at <= now {
            return Err(AuctionError::InvalidInput(
                "endsAt must be in the future".into(),
            ));
        }
        Ok(vec![AuctionEvent::AuctionOpened {
            auction_id: auction_id.clone(),
            seller: seller.clone(),
            title: title.to_string(),
            starting_price: *starting_price,
            min_increment: *min_increment,
            reserve_price: *reserve_price,
            ends_at: *ends_at,
            opened_at: *now,
            has_reserve: reserve_price.get() > 0,
        }])
    }

    fn decide_bid(
        &self,
        bidder: &UserId,
        amount: Cents,
        client_bid_id: &Option<ClientBidId>,
        now: DateTime<Utc>,
    ) -> Result<Vec<AuctionEvent>, AuctionError> {
        let ends_at = match (self.status, self.ends_at) {
            (AuctionStatus::Unopened, _) | (_, None) => return Err(AuctionError::NotFound),
            (AuctionStatus::Open, Some(ends_at)) => ends_at,
            _ => return Err(AuctionError::Closed),
        };
        if let Some(id) = client_bid_id {
            if self
                .client_bids
                .get(bidder)
                .is_some_and(|ids| ids.contains_key(id))
            {
                return Ok(vec![]);
            }
        }
        if now >= ends_at {
            return Err(AuctionError::Closed);
        }
        if self.seller.as_ref() == Some(bidder) {
            return Err(AuctionError::OwnAuction);
        }
        let minimum = self.minimum_next_bid();
        if amount < minimum {
            return Err(AuctionError::BidTooLow {
                amount: amount.get(),
                minimum: minimum.get(),
            });
        }
        let ends_at = if ends_at - now <= ANTI_SNIPING_WINDOW {
            ends_at + ANTI_SNIPING_WINDOW
        } else {
            ends_at
        };
        Ok(vec![AuctionEvent::BidPlaced {
            bidder: bidder.clone(),
            amount,
            client_bid_id: client_bid_id.clone(),
            placed_at: now,
            ends_at,
        }])
    }

    fn decide_close(
        &self,
        by: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Vec<AuctionEvent>, AuctionError> {
        let ends_at = match (self.status, self.ends_at) {
            (AuctionStatus::Unopened, _) | (_, None) => return Err(AuctionError::NotFound),
            (AuctionStatus::Open, Some(ends_at)) => ends_at,
            _ => return Err(AuctionError::Closed),
        };
        match by.role {
            Role::Admin => {}
            Role::System if now < ends_at => return Err(AuctionError::NotDue { ends_at }),
            Role::System => {}
            _ if self.seller.as_ref() == Some(&by.sub) => {}
            _ => return Err(AuctionError::Forbidden),
        }
        let outcome = match &self.highest {
            Some(bid) if bid.amount >= self.reserve_price => CloseOutcome::Sold {
                winner: bid.bidder.clone(),
                amount: bid.amount,
            },
            other => CloseOutcome::Unsold {
                highest: other.as_ref().map(|b| b.amount),
            },
        };
        Ok(vec![AuctionEvent::AuctionClosed {
            outcome,
            closed_at: now,
        }])
    }
}

/// The state a command's caller sees: everything but the idempotency index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionSummary {
    pub id: Option<AuctionId>,
    pub status: AuctionStatus,
    pub seller: Option<UserId>,
    pub title: String,
    pub starting_price: Cents,
    pub min_increment: Cents,
    pub reserve_price: Cents,
    pub ends_at: Option<DateTime<Utc>>,
    pub highest: Option<Bid>,
    pub bid_count: u64,
}

impl Decider for Auction {
    type Summary = AuctionSummary;

    fn summary(&self) -> AuctionSummary {
        AuctionSummary {
            id: self.id.clone(),
            status: self.status,
            seller: self.seller.clone(),
            title: self.title.clone(),
            starting_price: self.starting_price,
            min_increment: self.min_increment,
            reserve_price: self.reserve_price,
            ends_at: self.ends_at,
            highest: self.highest.clone(),
            bid_count: self.bid_count,
        }
    }

    fn decide(&self, command: &AuctionCommand) -> Result<Vec<AuctionEvent>, AuctionError> {
        match command {
            AuctionCommand::Open { .. } => self.decide_open(command),
            AuctionCommand::PlaceBid {
                bidder,
                amount,
                client_bid_id,
                now,
            } => self.decide_bid(bidder, *amount, client_bid_id, *now),
            AuctionCommand::Close { by, now } => self.decide_close(by, *now),
        }
    }
}

impl Aggregate for Auction {
    const TYPE: &'static str = "Auction";
    type Command = AuctionCommand;
    type Event = AuctionEvent;
    type Error = AuctionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _service: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        crate::decider::handle(self, command, sink).await
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            AuctionEvent::AuctionOpened {
                auction_id,
                seller,
                title,
                starting_price,
                min_increment,
                reserve_price,
                ends_at,
                opened_at: _,
                has_reserve: _,
            } => {
                self.id = Some(auction_id);
                self.status = AuctionStatus::Open;
                self.seller = Some(seller);
                self.title = title;
                self.starting_price = starting_price;
                self.min_increment = min_increment;
                self.reserve_price = reserve_price;
                self.ends_at = Some(ends_at);
            }
            AuctionEvent::BidPlaced {
                bidder,
                amount,
                client_bid_id,
                placed_at,
                ends_at,
            } => {
                if let Some(id) = client_bid_id {
                    self.client_bids
                        .entry(bidder.clone())
                        .or_default()
                        .insert(id, amount);
                }
                self.highest = Some(Bid {
                    bidder,
                    amount,
                    placed_at,
                });
                self.ends_at = Some(ends_at);
                self.bid_count += 1;
            }
            AuctionEvent::AuctionClosed { outcome, .. } => {
                self.status = match outcome {
                    CloseOutcome::Sold { .. } => AuctionStatus::Sold,
                    CloseOutcome::Unsold { .. } => AuctionStatus::Unsold,
                };
                self.outcome = Some(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests;
