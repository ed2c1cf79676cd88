//! Donation read models: `charity_view`, `donation_view`, `capacity_reservations` (the
//! reservation sweeper's work list), and on PostgreSQL with PostGIS the `charity_geo` table
//! (geography point, GiST index) for queries that need SQL joins.

use crate::geo::Near;
use crate::runner::{Projection, ProjectionError};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use triad_domain::donation::{CharityEvent, DonationEvent, FoodType, Proposal};
use triad_eventstore::store::Migration;
use triad_eventstore::RecordedEvent;

const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS charity_view (
    charity_id text PRIMARY KEY,
    manager_id text NOT NULL,
    name text NOT NULL,
    lat double precision NOT NULL,
    lng double precision NOT NULL,
    capacity_kg double precision NOT NULL,
    accepts text NOT NULL
);
CREATE TABLE IF NOT EXISTS donation_view (
    donation_id text PRIMARY KEY,
    donor_id text NOT NULL,
    food_type text NOT NULL,
    quantity_kg double precision NOT NULL,
    lat double precision NOT NULL,
    lng double precision NOT NULL,
    pickup_by text NOT NULL,
    expires_at text NOT NULL,
    status text NOT NULL,
    claimed_by text,
    proposals text NOT NULL,
    position bigint NOT NULL
);
"#;

const EXPIRY: &str =
    "ALTER TABLE donation_view ADD COLUMN expires_at_ms bigint NOT NULL DEFAULT 0; \
    CREATE INDEX IF NOT EXISTS donation_view_expiry_idx ON donation_view (status, expires_at_ms)";

/// Reservations not (yet) backed by a claim of the same charity: a row per CapacityReserved,
/// gone when the reservation is released or its donation is claimed by that charity. What
/// stays past a grace period was left by a claim that crashed or lost; the scheduler's sweeper
/// releases it.
const RESERVATIONS: &str = "CREATE TABLE IF NOT EXISTS capacity_reservations ( \
        charity_id text NOT NULL, \
        donation_id text NOT NULL, \
        day text NOT NULL, \
        kg double precision NOT NULL, \
        reserved_at_ms bigint NOT NULL, \
        PRIMARY KEY (charity_id, donation_id, day)); \
    CREATE INDEX IF NOT EXISTS capacity_reservations_age_idx ON capacity_reservations (reserved_at_ms)";

/// The owners' lists (`myDonations`, `myCharities`): newest first by log position, keyset
/// paginated per owner. `charity_view.position` is filled by a rebuild (version 3).
const OWNERS: &str = "ALTER TABLE charity_view ADD COLUMN position bigint NOT NULL DEFAULT 0; \
    CREATE INDEX IF NOT EXISTS charity_view_manager_idx ON charity_view (manager_id, position); \
    CREATE INDEX IF NOT EXISTS donation_view_donor_idx ON donation_view (donor_id, position)";

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        postgres: DDL,
        sqlite: DDL,
    },
    Migration {
        version: 2,
        postgres: EXPIRY,
        sqlite: EXPIRY,
    },
    Migration {
        version: 3,
        postgres: RESERVATIONS,
        sqlite: RESERVATIONS,
    },
    Migration {
        version: 4,
        postgres: OWNERS,
        sqlite: OWNERS,
    },
];

/// `,PRODUCE,BAKERY,`: portable "contains" with LIKE.
fn accepts_text(types: &[FoodType]) -> String {
    format!(
        ",{},",
        types
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Tries to enable PostGIS and create `charity_geo`; false when it is not installed.
pub async fn enable_postgis(pool: &AnyPool) -> bool {
    let steps = [
        "CREATE EXTENSION IF NOT EXISTS postgis",
        "CREATE TABLE IF NOT EXISTS charity_geo (charity_id text PRIMARY KEY, location geography(Point, 4326) NOT NULL, accepts text NOT NULL)",
        "CREATE INDEX IF NOT EXISTS charity_geo_location_idx ON charity_geo USING GIST (location)",
    ];
    for sql in steps {
        if let Err(e) = sqlx::query(sql).execute(pool).await {
            tracing::warn!(error = %e, "PostGIS unavailable: the geo read model stays in memory only");
            return false;
        }
    }
    true
}

pub struct DonationProjection {
    /// Also maintain `charity_geo` (PostgreSQL with PostGIS).
    pub postgis: bool,
}

#[async_trait::async_trait]
impl Projection for DonationProjection {
    fn name(&self) -> &'static str {
        "donations"
    }

    fn migrations(&self) -> &'static [Migration] {
        MIGRATIONS
    }

    /// 2: `capacity_reservations` (rebuilt from the log so existing reservations are in it).
    /// 3: `charity_view.position` (rebuilt so existing charities get theirs).
    fn version(&self) -> i64 {
        3
    }

    fn tables(&self) -> &'static [&'static str] {
        if self.postgis {
            &[
                "charity_view",
                "donation_view",
                "capacity_reservations",
                "charity_geo",
            ]
        } else {
            &["charity_view", "donation_view", "capacity_reservations"]
        }
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'static, Any>,
        e: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        match e.aggregate_type.as_str() {
            "Charity" => match e.decode::<CharityEvent>()? {
                CharityEvent::CharityRegistered {
                    charity_id,
                    manager,
                    name,
                    location,
                    capacity_kg,
                    accepts,
                    ..
                } => {
                    sqlx::query("INSERT INTO charity_view (charity_id, manager_id, name, lat, lng, capacity_kg, accepts, position) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING")
                        .bind(&charity_id)
                        .bind(manager.as_str())
                        .bind(&name)
                        .bind(location.lat)
                        .bind(location.lng)
                        .bind(capacity_kg)
                        .bind(accepts_text(&accepts))
                        .bind(e.position)
                        .execute(&mut **tx)
                        .await?;
                    if self.postgis {
                        sqlx::query("INSERT INTO charity_geo (charity_id, location, accepts) VALUES ($1, ST_SetSRID(ST_MakePoint($2, $3), 4326)::geography, $4) ON CONFLICT (charity_id) DO NOTHING")
                            .bind(&charity_id)
                            .bind(location.lng)
                            .bind(location.lat)
                            .bind(accepts_text(&accepts))
                            .execute(&mut **tx)
                            .await?;
                    }
                }
                CharityEvent::CharityUpdated {
                    capacity_kg,
                    accepts,
                    ..
                } => {
                    sqlx::query("UPDATE charity_view SET capacity_kg = $1, accepts = $2 WHERE charity_id = $3").bind(capacity_kg).bind(accepts_text(&accepts)).bind(&e.aggregate_id).execute(&mut **tx).await?;
                    if self.postgis {
                        sqlx::query("UPDATE charity_geo SET accepts = $1 WHERE charity_id = $2")
                            .bind(accepts_text(&accepts))
                            .bind(&e.aggregate_id)
                            .execute(&mut **tx)
                            .await?;
                    }
                }
                CharityEvent::CapacityReserved {
                    donation_id,
                    day,
                    kg,
                } => {
                    // A reservation made after its donation was already claimed by this
                    // charity is backed by that claim: nothing to sweep.
                    sqlx::query("INSERT INTO capacity_reservations (charity_id, donation_id, day, kg, reserved_at_ms) SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM donation_view WHERE donation_id = $2 AND claimed_by = $1) ON CONFLICT DO NOTHING")
                        .bind(&e.aggregate_id)
                        .bind(&donation_id)
                        .bind(day.to_string())
                        .bind(kg)
                        .bind(e.recorded_at.timestamp_millis())
                        .execute(&mut **tx)
                        .await?;
                }
                CharityEvent::CapacityReleased {
                    donation_id, day, ..
                } => {
                    sqlx::query("DELETE FROM capacity_reservations WHERE charity_id = $1 AND donation_id = $2 AND day = $3")
                        .bind(&e.aggregate_id)
                        .bind(&donation_id)
                        .bind(day.to_string())
                        .execute(&mut **tx)
                        .await?;
                }
            },
            "Donation" => {
                let (status, claimed_by, proposals): (
                    Option<&str>,
                    Option<String>,
                    Option<String>,
                ) = match e.decode::<DonationEvent>()? {
                    DonationEvent::DonationPosted {
                        donation_id,
                        donor,
                        food_type,
                        quantity_kg,
                        location,
                        pickup_by,
                        expires_at,
                        ..
                    } => {
                        sqlx::query("INSERT INTO donation_view (donation_id, donor_id, food_type, quantity_kg, lat, lng, pickup_by, expires_at, status, claimed_by, proposals, position, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'OPEN', NULL, '[]', $9, $10) ON CONFLICT DO NOTHING")
                            .bind(&donation_id)
                            .bind(donor.as_str())
                            .bind(food_type.as_str())
                            .bind(quantity_kg)
                            .bind(location.lat)
                            .bind(location.lng)
                            .bind(rfc3339(pickup_by))
                            .bind(rfc3339(expires_at))
                            .bind(e.position)
                            .bind(expires_at.timestamp_millis())
                            .execute(&mut **tx)
                            .await?;
                        return Ok(());
                    }
                    DonationEvent::MatchesProposed { proposals, .. } => (
                        None,
                        None,
                        Some(serde_json::to_string(&proposals).unwrap_or_default()),
                    ),
                    DonationEvent::DonationClaimed { charity_id, .. } => {
                        // The claim now backs this charity's reservation.
                        sqlx::query("DELETE FROM capacity_reservations WHERE charity_id = $1 AND donation_id = $2")
                            .bind(&charity_id)
                            .bind(&e.aggregate_id)
                            .execute(&mut **tx)
                            .await?;
                        (Some("CLAIMED"), Some(charity_id), None)
                    }
                    DonationEvent::DonationPickedUp { .. } => (Some("PICKED_UP"), None, None),
                    DonationEvent::DonationDelivered { .. } => (Some("DELIVERED"), None, None),
                    DonationEvent::DonationExpired { .. } => (Some("EXPIRED"), None, None),
                    DonationEvent::DonationCancelled { .. } => (Some("CANCELLED"), None, None),
                };
                sqlx::query("UPDATE donation_view SET status = coalesce($1, status), claimed_by = coalesce($2, claimed_by), proposals = coalesce($3, proposals) WHERE donation_id = $4")
                    .bind(status)
                    .bind(claimed_by)
                    .bind(proposals)
                    .bind(&e.aggregate_id)
                    .execute(&mut **tx)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The PostGIS query: ST_DWithin on the sphere (the same distances as the in-memory index),
/// nearest first.
pub async fn near_postgis(
    pool: &AnyPool,
    lat: f64,
    lng: f64,
    radius_km: f64,
    food: Option<FoodType>,
) -> Result<Vec<Near>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT charity_id, ST_Distance(location, ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography, false) / 1000.0 AS km \
         FROM charity_geo \
         WHERE ST_DWithin(location, ST_SetSRID(ST_MakePoint($1, $2), 4326)::geography, $3 * 1000.0, false) \
           AND ($4 = '' OR accepts LIKE '%,' || $4 || ',%') \
         ORDER BY km, charity_id",
    )
    .bind(lng)
    .bind(lat)
    .bind(radius_km)
    .bind(food.map_or("", |f| f.as_str()))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Near {
                charity_id: r.try_get("charity_id")?,
                distance_km: r.try_get("km")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(Into::into)
}

/// A donation as the read model holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct DonationRow {
    pub donation_id: String,
    pub donor_id: String,
    pub food_type: FoodType,
    pub quantity_kg: f64,
    pub lat: f64,
    pub lng: f64,
    pub pickup_by: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `DonationStatus::as_str`: OPEN, CLAIMED, PICKED_UP, DELIVERED, EXPIRED, CANCELLED.
    pub status: String,
    pub claimed_by: Option<String>,
    pub proposals: Vec<Proposal>,
    /// Where it was posted in the log: the list's order and cursor.
    pub position: i64,
}

fn invalid(column: &str, value: &str, e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Invalid(format!("donation_view.{column} {value:?}: {e}"))
}

fn donation_row(r: &AnyRow) -> Result<DonationRow, ProjectionError> {
    let time = |column: &str| -> Result<DateTime<Utc>, ProjectionError> {
        let text: String = r.try_get(column)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| invalid(column, &text, e))
    };
    let food: String = r.try_get("food_type")?;
    let proposals: String = r.try_get("proposals")?;
    Ok(DonationRow {
        donation_id: r.try_get("donation_id")?,
        donor_id: r.try_get("donor_id")?,
        food_type: FoodType::ALL
            .into_iter()
            .find(|f| f.as_str() == food)
            .ok_or_else(|| invalid("food_type", &food, "not a food type"))?,
        quantity_kg: r.try_get("quantity_kg")?,
        lat: r.try_get("lat")?,
        lng: r.try_get("lng")?,
        pickup_by: time("pickup_by")?,
        expires_at: time("expires_at")?,
        status: r.try_get("status")?,
        claimed_by: r.try_get("claimed_by")?,
        proposals: serde_json::from_str(&proposals)
            .map_err(|e| invalid("proposals", &proposals, e))?,
        position: r.try_get("position")?,
    })
}

/// A donor's donations (with `status`, if given), newest first, posted before
/// `before_position` (the cursor). Returns the page and whether more follow.
pub async fn donations_of_donor(
    pool: &AnyPool,
    donor_id: &str,
    status: Option<&str>,
    first: i64,
    before_position: Option<i64>,
) -> Result<(Vec<DonationRow>, bool), ProjectionError> {
    let rows = sqlx::query(
        "SELECT donation_id, donor_id, food_type, quantity_kg, lat, lng, pickup_by, expires_at, \
                status, claimed_by, proposals, position \
         FROM donation_view \
         WHERE donor_id = $1 AND ($2 = '' OR status = $2) AND position < $3 \
         ORDER BY position DESC LIMIT $4",
    )
    .bind(donor_id)
    .bind(status.unwrap_or(""))
    .bind(before_position.unwrap_or(i64::MAX))
    .bind(first + 1)
    .fetch_all(pool)
    .await?;
    let page = rows
        .iter()
        .map(donation_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::sql::take_page(page, first as usize))
}

/// The ids and registration positions of the charities `manager_id` manages, newest first,
/// registered before `before_position` (the cursor). Returns the page and whether more follow.
pub async fn charities_of_manager(
    pool: &AnyPool,
    manager_id: &str,
    first: i64,
    before_position: Option<i64>,
) -> Result<(Vec<(String, i64)>, bool), ProjectionError> {
    let rows = sqlx::query(
        "SELECT charity_id, position FROM charity_view \
         WHERE manager_id = $1 AND position < $2 ORDER BY position DESC LIMIT $3",
    )
    .bind(manager_id)
    .bind(before_position.unwrap_or(i64::MAX))
    .bind(first + 1)
    .fetch_all(pool)
    .await?;
    let page = rows
        .iter()
        .map(|r| Ok((r.try_get("charity_id")?, r.try_get("position")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(crate::sql::take_page(page, first as usize))
}

/// Open donations whose food has expired: the scheduler's work list.
pub async fn expired_donations(
    pool: &AnyPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<String>, ProjectionError> {
    Ok(sqlx::query_scalar("SELECT donation_id FROM donation_view WHERE status = 'OPEN' AND expires_at_ms <= $1 ORDER BY expires_at_ms LIMIT $2")
        .bind(now.timestamp_millis())
        .bind(limit)
        .fetch_all(pool)
        .await?)
}

/// A reservation with no claim of its charity behind it (yet).
#[derive(Debug, Clone, PartialEq)]
pub struct OpenReservation {
    pub charity_id: String,
    pub donation_id: String,
    pub day: NaiveDate,
    pub kg: f64,
    pub reserved_at: DateTime<Utc>,
}

/// Reservations made at or before `before` that no claim of their charity backs, oldest
/// first: the reservation sweeper's work list.
pub async fn unclaimed_reservations(
    pool: &AnyPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<OpenReservation>, ProjectionError> {
    let rows = sqlx::query("SELECT charity_id, donation_id, day, kg, reserved_at_ms FROM capacity_reservations WHERE reserved_at_ms <= $1 ORDER BY reserved_at_ms, charity_id, donation_id LIMIT $2")
        .bind(before.timestamp_millis())
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            let day: String = r.try_get("day")?;
            let ms: i64 = r.try_get("reserved_at_ms")?;
            Ok(OpenReservation {
                charity_id: r.try_get("charity_id")?,
                donation_id: r.try_get("donation_id")?,
                day: day.parse().map_err(|e| {
                    ProjectionError::Invalid(format!("capacity_reservations.day {day:?}: {e}"))
                })?,
                kg: r.try_get("kg")?,
                reserved_at: DateTime::from_timestamp_millis(ms).ok_or_else(|| {
                    ProjectionError::Invalid(format!(
                        "capacity_reservations.reserved_at_ms {ms} is out of range"
                    ))
                })?,
            })
        })
        .collect()
}
