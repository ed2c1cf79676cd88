//! Auction read models: `auction_view` (one row per auction, for `auction` and `auctions`)
//! and `auction_leaderboard` (each bidder's best bid, ranked), plus their queries.

use crate::runner::{Projection, ProjectionError};
use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::Aggregate;
use sqlx::{Any, AnyPool, Row, Transaction};
use triad_domain::auction::{Auction, AuctionEvent, CloseOutcome};
use triad_eventstore::store::Migration;
use triad_eventstore::RecordedEvent;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    postgres: r#"
CREATE TABLE IF NOT EXISTS auction_view (
    auction_id text PRIMARY KEY,
    seller_id text NOT NULL,
    title text NOT NULL,
    status text NOT NULL,
    starting_price_cents bigint NOT NULL,
    min_increment_cents bigint NOT NULL,
    reserve_price_cents bigint NOT NULL,
    ends_at text NOT NULL,
    ends_at_ms bigint NOT NULL,
    highest_amount_cents bigint,
    highest_bidder_id text,
    bid_count bigint NOT NULL,
    version bigint NOT NULL,
    opened_at text NOT NULL,
    opened_position bigint NOT NULL,
    last_position bigint NOT NULL,
    closed_at text,
    winner_id text
);
CREATE INDEX IF NOT EXISTS auction_view_status_idx ON auction_view (status, opened_position);
CREATE INDEX IF NOT EXISTS auction_view_due_idx ON auction_view (status, ends_at_ms);
CREATE TABLE IF NOT EXISTS auction_leaderboard (
    auction_id text NOT NULL,
    bidder_id text NOT NULL,
    best_amount_cents bigint NOT NULL,
    bid_count bigint NOT NULL,
    last_bid_at text NOT NULL,
    last_position bigint NOT NULL,
    PRIMARY KEY (auction_id, bidder_id)
);
CREATE INDEX IF NOT EXISTS auction_leaderboard_rank_idx ON auction_leaderboard (auction_id, best_amount_cents DESC);
"#,
    sqlite: r#"
CREATE TABLE IF NOT EXISTS auction_view (
    auction_id text PRIMARY KEY,
    seller_id text NOT NULL,
    title text NOT NULL,
    status text NOT NULL,
    starting_price_cents integer NOT NULL,
    min_increment_cents integer NOT NULL,
    reserve_price_cents integer NOT NULL,
    ends_at text NOT NULL,
    ends_at_ms integer NOT NULL,
    highest_amount_cents integer,
    highest_bidder_id text,
    bid_count integer NOT NULL,
    version integer NOT NULL,
    opened_at text NOT NULL,
    opened_position integer NOT NULL,
    last_position integer NOT NULL,
    closed_at text,
    winner_id text
);
CREATE INDEX IF NOT EXISTS auction_view_status_idx ON auction_view (status, opened_position);
CREATE INDEX IF NOT EXISTS auction_view_due_idx ON auction_view (status, ends_at_ms);
CREATE TABLE IF NOT EXISTS auction_leaderboard (
    auction_id text NOT NULL,
    bidder_id text NOT NULL,
    best_amount_cents integer NOT NULL,
    bid_count integer NOT NULL,
    last_bid_at text NOT NULL,
    last_position integer NOT NULL,
    PRIMARY KEY (auction_id, bidder_id)
);
CREATE INDEX IF NOT EXISTS auction_leaderboard_rank_idx ON auction_leaderboard (auction_id, best_amount_cents DESC);
"#,
}];

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Both auction read models in one projection: they change together, on the same events.
#[derive(Debug, Default)]
pub struct AuctionProjection;

#[async_trait::async_trait]
impl Projection for AuctionProjection {
    fn name(&self) -> &'static str {
        "auctions"
    }

    fn migrations(&self) -> &'static [Migration] {
        MIGRATIONS
    }

    fn tables(&self) -> &'static [&'static str] {
        &["auction_view", "auction_leaderboard"]
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        e: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if e.aggregate_type != Auction::TYPE {
            return Ok(());
        }
        let event: AuctionEvent = e.decode()?;
        match event {
            AuctionEvent::AuctionOpened {
                auction_id,
                seller,
                title,
                starting_price,
                min_increment,
                reserve_price,
                ends_at,
                opened_at,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO auction_view (auction_id, seller_id, title, status, \
                     starting_price_cents, min_increment_cents, reserve_price_cents, ends_at, \
                     ends_at_ms, highest_amount_cents, highest_bidder_id, bid_count, version, \
                     opened_at, opened_position, last_position, closed_at, winner_id) \
                     VALUES ($1, $2, $3, 'OPEN', $4, $5, $6, $7, $8, NULL, NULL, 0, $9, $10, $11, $11, NULL, NULL) \
                     ON CONFLICT (auction_id) DO NOTHING",
                )
                .bind(auction_id.as_str())
                .bind(seller.as_str())
                .bind(title)
                .bind(starting_price.get())
                .bind(min_increment.get())
                .bind(reserve_price.get())
                .bind(rfc3339(ends_at))
                .bind(ends_at.timestamp_millis())
                .bind(e.sequence)
                .bind(rfc3339(opened_at))
                .bind(e.position)
                .execute(&mut **tx)
                .await?;
            }
            AuctionEvent::BidPlaced {
                bidder,
                amount,
                placed_at,
                ends_at,
                ..
            } => {
                sqlx::query(
                    "UPDATE auction_view SET highest_amount_cents = $1, highest_bidder_id = $2, \
                     bid_count = bid_count + 1, ends_at = $3, ends_at_ms = $4, version = $5, \
                     last_position = $6 WHERE auction_id = $7",
                )
                .bind(amount.get())
                .bind(bidder.as_str())
                .bind(rfc3339(ends_at))
                .bind(ends_at.timestamp_millis())
                .bind(e.sequence)
                .bind(e.position)
                .bind(&e.aggregate_id)
                .execute(&mut **tx)
                .await?;
                // Accepted bids only increase, so a bidder's latest bid is their best.
                sqlx::query(
                    "INSERT INTO auction_leaderboard (auction_id, bidder_id, best_amount_cents, \
                     bid_count, last_bid_at, last_position) VALUES ($1, $2, $3, 1, $4, $5) \
                     ON CONFLICT (auction_id, bidder_id) DO UPDATE SET \
                     best_amount_cents = excluded.best_amount_cents, \
                     bid_count = auction_leaderboard.bid_count + 1, \
                     last_bid_at = excluded.last_bid_at, last_position = excluded.last_position",
                )
                .bind(&e.aggregate_id)
                .bind(bidder.as_str())
                .bind(amount.get())
                .bind(rfc3339(placed_at))
                .bind(e.position)
                .execute(&mut **tx)
                .await?;
            }
            AuctionEvent::AuctionClosed { outcome, closed_at } => {
                let (status, winner) = match &outcome {
                    CloseOutcome::Sold { winner, .. } => ("SOLD", Some(winner.as_str())),
                    CloseOutcome::Unsold { .. } => ("UNSOLD", None),
                };
                sqlx::query(
                    "UPDATE auction_view SET status = $1, winner_id = $2, closed_at = $3, \
                     version = $4, last_position = $5 WHERE auction_id = $6",
                )
                .bind(status)
                .bind(winner)
                .bind(rfc3339(closed_at))
                .bind(e.sequence)
                .bind(e.position)
                .bind(&e.aggregate_id)
                .execute(&mut **tx)
                .await?;
            }
        }
        Ok(())
    }
}

/// One row of `auction_view`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuctionRow {
    pub auction_id: String,
    pub seller_id: String,
    pub title: String,
    pub status: String,
    pub starting_price_cents: i64,
    pub min_increment_cents: i64,
    pub reserve_price_cents: i64,
    pub ends_at: String,
    pub highest_amount_cents: Option<i64>,
    pub highest_bidder_id: Option<String>,
    pub bid_count: i64,
    pub version: i64,
    pub opened_at: String,
    pub opened_position: i64,
    pub last_position: i64,
    pub closed_at: Option<String>,
    pub winner_id: Option<String>,
}

const AUCTION_COLUMNS: &str = "auction_id, seller_id, title, status, starting_price_cents, \
    min_increment_cents, reserve_price_cents, ends_at, highest_amount_cents, highest_bidder_id, \
    bid_count, version, opened_at, opened_position, last_position, closed_at, winner_id";

fn auction_row(r: &sqlx::any::AnyRow) -> Result<AuctionRow, sqlx::Error> {
    Ok(AuctionRow {
        auction_id: r.try_get("auction_id")?,
        seller_id: r.try_get("seller_id")?,
        title: r.try_get("title")?,
        status: r.try_get("status")?,
        starting_price_cents: r.try_get("starting_price_cents")?,
        min_increment_cents: r.try_get("min_increment_cents")?,
        reserve_price_cents: r.try_get("reserve_price_cents")?,
        ends_at: r.try_get("ends_at")?,
        highest_amount_cents: r.try_get("highest_amount_cents")?,
        highest_bidder_id: r.try_get("highest_bidder_id")?,
        bid_count: r.try_get("bid_count")?,
        version: r.try_get("version")?,
        opened_at: r.try_get("opened_at")?,
        opened_position: r.try_get("opened_position")?,
        last_position: r.try_get("last_position")?,
        closed_at: r.try_get("closed_at")?,
        winner_id: r.try_get("winner_id")?,
    })
}

pub async fn get_auction(pool: &AnyPool, id: &str) -> Result<Option<AuctionRow>, ProjectionError> {
    let row = sqlx::query(&format!(
        "SELECT {AUCTION_COLUMNS} FROM auction_view WHERE auction_id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(auction_row).transpose()?)
}

/// A page of auctions, newest first, keyed by `opened_position` (the cursor).
/// Returns the page and whether more follow.
pub async fn list_auctions(
    pool: &AnyPool,
    status: Option<&str>,
    first: i64,
    before_position: Option<i64>,
) -> Result<(Vec<AuctionRow>, bool), ProjectionError> {
    let rows = sqlx::query(&format!(
        "SELECT {AUCTION_COLUMNS} FROM auction_view \
         WHERE ($1 = '' OR status = $1) AND opened_position < $2 \
         ORDER BY opened_position DESC LIMIT $3"
    ))
    .bind(status.unwrap_or(""))
    .bind(before_position.unwrap_or(i64::MAX))
    .bind(first + 1)
    .fetch_all(pool)
    .await?;
    let mut page = rows
        .iter()
        .map(auction_row)
        .collect::<Result<Vec<_>, _>>()?;
    let more = page.len() as i64 > first;
    page.truncate(first as usize);
    Ok((page, more))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRow {
    pub bidder_id: String,
    pub best_amount_cents: i64,
    pub bid_count: i64,
    pub last_bid_at: String,
}

/// Each bidder's best bid, highest first (ties: who got there first).
pub async fn leaderboard(
    pool: &AnyPool,
    auction_id: &str,
    top: i64,
) -> Result<Vec<LeaderRow>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT bidder_id, best_amount_cents, bid_count, last_bid_at FROM auction_leaderboard \
         WHERE auction_id = $1 ORDER BY best_amount_cents DESC, last_position ASC LIMIT $2",
    )
    .bind(auction_id)
    .bind(top)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LeaderRow {
                bidder_id: r.try_get("bidder_id")?,
                best_amount_cents: r.try_get("best_amount_cents")?,
                bid_count: r.try_get("bid_count")?,
                last_bid_at: r.try_get("last_bid_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(Into::into)
}

/// Open auctions whose end has passed: the scheduler's work list.
pub async fn due_auctions(
    pool: &AnyPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<String>, ProjectionError> {
    let ids = sqlx::query_scalar(
        "SELECT auction_id FROM auction_view WHERE status = 'OPEN' AND ends_at_ms <= $1 \
         ORDER BY ends_at_ms LIMIT $2",
    )
    .bind(now.timestamp_millis())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(ids)
}
