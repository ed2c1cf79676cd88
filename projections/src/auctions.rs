//! Auction read models: `auction_view` (one row per auction, for `auction` and `auctions`)
//! and `auction_leaderboard` (each bidder's best bid, ranked), plus their queries.

use crate::runner::{Projection, ProjectionError};
use crate::sql::{values, ROWS_PER_STATEMENT};
use chrono::{DateTime, SecondsFormat, Utc};
use cqrs_es::Aggregate;
use sqlx::{Any, AnyPool, Row, Transaction};
use std::collections::BTreeMap;
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
        self.apply_batch(tx, std::slice::from_ref(e)).await
    }

    /// Folds the run in memory, then writes each touched row once: new auctions as one
    /// multi-row insert, every auction's change as one row of a multi-row update, every
    /// (auction, bidder) as one row of a multi-row upsert. A rebuild page of 10,000 bids
    /// becomes a handful of statements instead of 20,000.
    async fn apply_batch(
        &self,
        tx: &mut Transaction<'static, Any>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let fold = Fold::of(events)?;
        for chunk in fold.opened.chunks(ROWS_PER_STATEMENT) {
            insert_opened(tx, chunk).await?;
        }
        let views: Vec<_> = fold.views.into_iter().collect();
        for chunk in views.chunks(ROWS_PER_STATEMENT) {
            update_views(tx, chunk).await?;
        }
        let leaders: Vec<_> = fold.leaders.into_iter().collect();
        for chunk in leaders.chunks(ROWS_PER_STATEMENT) {
            upsert_leaders(tx, chunk).await?;
        }
        Ok(())
    }
}

/// A new `auction_view` row.
struct Opened {
    auction_id: String,
    seller: String,
    title: String,
    starting_price: i64,
    min_increment: i64,
    reserve_price: i64,
    ends_at: DateTime<Utc>,
    version: i64,
    opened_at: DateTime<Utc>,
    position: i64,
}

/// What a run of events changes in one existing `auction_view` row.
#[derive(Default)]
struct ViewChange {
    /// The last accepted bid: (amount, bidder, ends_at after it).
    last_bid: Option<(i64, String, DateTime<Utc>)>,
    bids: i64,
    /// (status, winner, closed_at).
    closed: Option<(&'static str, Option<String>, DateTime<Utc>)>,
    version: i64,
    last_position: i64,
}

/// What a run of events changes in one bidder's leaderboard row.
struct LeaderChange {
    /// Accepted bids only increase, so a bidder's latest bid is their best.
    best: i64,
    bids: i64,
    last_bid_at: DateTime<Utc>,
    last_position: i64,
}

/// A run of events folded per row, in log order within each row.
#[derive(Default)]
struct Fold {
    opened: Vec<Opened>,
    views: BTreeMap<String, ViewChange>,
    leaders: BTreeMap<(String, String), LeaderChange>,
}

impl Fold {
    fn of(events: &[RecordedEvent]) -> Result<Fold, ProjectionError> {
        let mut fold = Fold::default();
        for e in events.iter().filter(|e| e.aggregate_type == Auction::TYPE) {
            match e.decode::<AuctionEvent>()? {
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
                } => fold.opened.push(Opened {
                    auction_id: auction_id.as_str().to_string(),
                    seller: seller.as_str().to_string(),
                    title,
                    starting_price: starting_price.get(),
                    min_increment: min_increment.get(),
                    reserve_price: reserve_price.get(),
                    ends_at,
                    version: e.sequence,
                    opened_at,
                    position: e.position,
                }),
                AuctionEvent::BidPlaced {
                    bidder,
                    amount,
                    placed_at,
                    ends_at,
                    ..
                } => {
                    let view = fold.view(e);
                    view.last_bid = Some((amount.get(), bidder.as_str().to_string(), ends_at));
                    view.bids += 1;
                    let key = (e.aggregate_id.clone(), bidder.as_str().to_string());
                    let leader = fold.leaders.entry(key).or_insert(LeaderChange {
                        best: amount.get(),
                        bids: 0,
                        last_bid_at: placed_at,
                        last_position: e.position,
                    });
                    leader.best = amount.get();
                    leader.bids += 1;
                    leader.last_bid_at = placed_at;
                    leader.last_position = e.position;
                }
                AuctionEvent::AuctionClosed { outcome, closed_at } => {
                    let (status, winner) = match outcome {
                        CloseOutcome::Sold { winner, .. } => {
                            ("SOLD", Some(winner.as_str().to_string()))
                        }
                        CloseOutcome::Unsold { .. } => ("UNSOLD", None),
                    };
                    fold.view(e).closed = Some((status, winner, closed_at));
                }
            }
        }
        Ok(fold)
    }

    /// The change to `e`'s auction row, moved to `e`'s version and position.
    fn view(&mut self, e: &RecordedEvent) -> &mut ViewChange {
        let view = self.views.entry(e.aggregate_id.clone()).or_default();
        view.version = e.sequence;
        view.last_position = e.position;
        view
    }
}

async fn insert_opened(
    tx: &mut Transaction<'static, Any>,
    rows: &[Opened],
) -> Result<(), ProjectionError> {
    const TYPES: &[&str] = &[
        "text", "text", "text", "bigint", "bigint", "bigint", "text", "bigint", "bigint", "text",
        "bigint",
    ];
    let sql = format!(
        "WITH d(auction_id, seller_id, title, starting, increment, reserve, ends_at, \
         ends_at_ms, version, opened_at, position) AS (VALUES {}) \
         INSERT INTO auction_view (auction_id, seller_id, title, status, starting_price_cents, \
         min_increment_cents, reserve_price_cents, ends_at, ends_at_ms, highest_amount_cents, \
         highest_bidder_id, bid_count, version, opened_at, opened_position, last_position, \
         closed_at, winner_id) \
         SELECT d.auction_id, d.seller_id, d.title, 'OPEN', d.starting, d.increment, d.reserve, \
         d.ends_at, d.ends_at_ms, NULL, NULL, 0, d.version, d.opened_at, d.position, d.position, \
         NULL, NULL FROM d WHERE true ON CONFLICT (auction_id) DO NOTHING",
        values(rows.len(), TYPES)
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for r in rows {
        q = q
            .bind(r.auction_id.as_str())
            .bind(r.seller.as_str())
            .bind(r.title.as_str())
            .bind(r.starting_price)
            .bind(r.min_increment)
            .bind(r.reserve_price)
            .bind(rfc3339(r.ends_at))
            .bind(r.ends_at.timestamp_millis())
            .bind(r.version)
            .bind(rfc3339(r.opened_at))
            .bind(r.position);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

async fn update_views(
    tx: &mut Transaction<'static, Any>,
    rows: &[(String, ViewChange)],
) -> Result<(), ProjectionError> {
    const TYPES: &[&str] = &[
        "text", "bigint", "text", "text", "bigint", "bigint", "text", "text", "text", "bigint",
        "bigint",
    ];
    let sql = format!(
        "WITH d(auction_id, amount, bidder, ends_at, ends_at_ms, bids, status, winner, \
         closed_at, version, last_position) AS (VALUES {}) \
         UPDATE auction_view SET \
         highest_amount_cents = COALESCE(d.amount, auction_view.highest_amount_cents), \
         highest_bidder_id = COALESCE(d.bidder, auction_view.highest_bidder_id), \
         ends_at = COALESCE(d.ends_at, auction_view.ends_at), \
         ends_at_ms = COALESCE(d.ends_at_ms, auction_view.ends_at_ms), \
         bid_count = auction_view.bid_count + d.bids, \
         status = COALESCE(d.status, auction_view.status), \
         winner_id = CASE WHEN d.status IS NULL THEN auction_view.winner_id ELSE d.winner END, \
         closed_at = COALESCE(d.closed_at, auction_view.closed_at), \
         version = d.version, last_position = d.last_position \
         FROM d WHERE auction_view.auction_id = d.auction_id",
        values(rows.len(), TYPES)
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for (id, c) in rows {
        let (amount, bidder, ends_at) = match &c.last_bid {
            Some((amount, bidder, ends_at)) => {
                (Some(*amount), Some(bidder.as_str()), Some(*ends_at))
            }
            None => (None, None, None),
        };
        let (status, winner, closed_at) = match &c.closed {
            Some((status, winner, at)) => (Some(*status), winner.as_deref(), Some(rfc3339(*at))),
            None => (None, None, None),
        };
        q = q
            .bind(id.as_str())
            .bind(amount)
            .bind(bidder)
            .bind(ends_at.map(rfc3339))
            .bind(ends_at.map(|t| t.timestamp_millis()))
            .bind(c.bids)
            .bind(status)
            .bind(winner)
            .bind(closed_at)
            .bind(c.version)
            .bind(c.last_position);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

async fn upsert_leaders(
    tx: &mut Transaction<'static, Any>,
    rows: &[((String, String), LeaderChange)],
) -> Result<(), ProjectionError> {
    const TYPES: &[&str] = &["text", "text", "bigint", "bigint", "text", "bigint"];
    let sql = format!(
        "WITH d(auction_id, bidder_id, best, bids, last_bid_at, last_position) AS (VALUES {}) \
         INSERT INTO auction_leaderboard (auction_id, bidder_id, best_amount_cents, bid_count, \
         last_bid_at, last_position) SELECT * FROM d WHERE true \
         ON CONFLICT (auction_id, bidder_id) DO UPDATE SET \
         best_amount_cents = excluded.best_amount_cents, \
         bid_count = auction_leaderboard.bid_count + excluded.bid_count, \
         last_bid_at = excluded.last_bid_at, last_position = excluded.last_position",
        values(rows.len(), TYPES)
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for ((auction, bidder), c) in rows {
        q = q
            .bind(auction.as_str())
            .bind(bidder.as_str())
            .bind(c.best)
            .bind(c.bids)
            .bind(rfc3339(c.last_bid_at))
            .bind(c.last_position);
    }
    q.execute(&mut **tx).await?;
    Ok(())
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
    let page = rows
        .iter()
        .map(auction_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::sql::take_page(page, first as usize))
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
