//! Donation read models: `charity_view`, `donation_view`, and on PostgreSQL with PostGIS the
//! `charity_geo` table (geography point, GiST index) for queries that need SQL joins.

use crate::geo::Near;
use crate::runner::{Projection, ProjectionError};
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{Any, AnyPool, Row, Transaction};
use triad_domain::donation::{CharityEvent, DonationEvent, FoodType};
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

    fn tables(&self) -> &'static [&'static str] {
        if self.postgis {
            &["charity_view", "donation_view", "charity_geo"]
        } else {
            &["charity_view", "donation_view"]
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
                    sqlx::query("INSERT INTO charity_view (charity_id, manager_id, name, lat, lng, capacity_kg, accepts) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING")
                        .bind(&charity_id)
                        .bind(manager.as_str())
                        .bind(&name)
                        .bind(location.lat)
                        .bind(location.lng)
                        .bind(capacity_kg)
                        .bind(accepts_text(&accepts))
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
                _ => {}
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
