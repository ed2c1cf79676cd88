//! The donation marketplace over GraphQL.

use super::{require, services};
use crate::errors::{self, coded, forbidden, invalid_input, not_found};
use async_graphql::connection::Connection;
use async_graphql::{
    ComplexObject, Context, Enum, InputObject, Object, SimpleObject, Subscription, ID,
};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use cqrs_es::Aggregate;
use futures::{Stream, StreamExt};
use std::sync::Arc;
use triad_domain::donation::{
    Charity, CharityCommand, Donation as DonationState, DonationCommand, DonationError,
    DonationEvent, FoodType as DomainFood, PickupHours,
};
use triad_domain::geo::GeoPoint;
use triad_domain::Role;
use triad_eventstore::store::LogFilter;
use triad_eventstore::{AggregateStore, CommandContext, CommandError};
use triad_projections::donations::{self as views, DonationRow};

/// Largest radius `charitiesNear` accepts.
pub const MAX_RADIUS_KM: f64 = 500.0;
pub const MAX_RESULTS: usize = 1_000;

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
#[graphql(remote = "triad_domain::donation::FoodType")]
pub enum FoodType {
    Produce,
    Bakery,
    Dairy,
    Meat,
    Prepared,
    Pantry,
    Frozen,
}

#[derive(InputObject, Clone, Copy)]
pub struct LocationInput {
    pub lat: f64,
    pub lng: f64,
}

#[derive(SimpleObject, Clone, Copy)]
pub struct Location {
    pub lat: f64,
    pub lng: f64,
}

fn point(input: LocationInput) -> async_graphql::Result<GeoPoint> {
    GeoPoint::parse(input.lat, input.lng).map_err(|e| invalid_input(e.to_string()))
}

fn donation_error(err: CommandError<DonationError>) -> async_graphql::Error {
    match err {
        CommandError::Rejected(e) => coded(e.code(), e.to_string()),
        CommandError::Contention => coded("CONFLICT", err.to_string()),
        CommandError::Store(e) => errors::internal(e),
    }
}

#[derive(SimpleObject, Clone)]
#[graphql(name = "Charity", complex)]
pub struct CharityNode {
    pub id: ID,
    pub name: String,
    pub manager_id: ID,
    pub location: Location,
    pub capacity_kg: f64,
    pub accepts: Vec<FoodType>,
    pub pickup_hours: Option<PickupHoursInput>,
    /// The aggregate the node was made from: reservations are answered by the same decision
    /// state that refuses claims beyond capacity, not by a read model that may lag.
    #[graphql(skip)]
    pub state: Arc<Charity>,
}

#[ComplexObject]
impl CharityNode {
    /// Kilograms reserved for donations picked up on `day` (a UTC date; default today):
    /// claims, and claims still in flight.
    async fn reserved_kg(&self, day: Option<NaiveDate>) -> f64 {
        self.state.reserved_on(day.unwrap_or_else(today))
    }

    /// Kilograms the charity can still take for pickups on `day` (a UTC date; default today).
    async fn remaining_kg(&self, day: Option<NaiveDate>) -> f64 {
        self.state.remaining_on(day.unwrap_or_else(today))
    }
}

/// Capacity is per pickup day, and pickup days are UTC dates (`Donation::pickup_day`).
fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn charity_node(c: &Charity) -> CharityNode {
    let loc = c.location.unwrap_or(GeoPoint { lat: 0.0, lng: 0.0 });
    CharityNode {
        id: ID(c.id.clone().unwrap_or_default()),
        name: c.name.clone(),
        manager_id: ID(c
            .manager
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default()),
        location: Location {
            lat: loc.lat,
            lng: loc.lng,
        },
        capacity_kg: c.capacity_kg,
        accepts: c.accepts.iter().map(|f| (*f).into()).collect(),
        pickup_hours: c.pickup_hours.map(|h| {
            let hhmm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
            PickupHoursInput {
                opens_at: hhmm(h.opens_at_minute),
                closes_at: hhmm(h.closes_at_minute),
            }
        }),
        state: Arc::new(c.clone()),
    }
}

#[derive(SimpleObject, Clone)]
pub struct Match {
    pub charity_id: ID,
    pub distance_km: f64,
    pub score: f64,
}

#[derive(SimpleObject, Clone)]
#[graphql(name = "Donation")]
pub struct DonationNode {
    pub id: ID,
    pub donor_id: ID,
    pub status: String,
    pub food_type: FoodType,
    pub quantity_kg: f64,
    pub location: Location,
    pub pickup_by: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub claimed_by: Option<ID>,
    /// Charities proposed by the matcher (empty until it has decided).
    pub matches: Vec<Match>,
}

fn donation_node(d: &DonationState) -> DonationNode {
    let loc = d.location.unwrap_or(GeoPoint { lat: 0.0, lng: 0.0 });
    DonationNode {
        id: ID(d.id.clone().unwrap_or_default()),
        donor_id: ID(d.donor.as_ref().map(|u| u.to_string()).unwrap_or_default()),
        status: d.status.as_str().to_string(),
        food_type: d.food_type.unwrap_or(DomainFood::Pantry).into(),
        quantity_kg: d.quantity_kg,
        location: Location {
            lat: loc.lat,
            lng: loc.lng,
        },
        pickup_by: d.pickup_by.unwrap_or_default(),
        expires_at: d.expires_at.unwrap_or_default(),
        claimed_by: d.claimed_by.clone().map(ID),
        matches: d
            .proposals
            .iter()
            .map(|p| Match {
                charity_id: ID(p.charity_id.clone()),
                distance_km: p.distance_km,
                score: p.score,
            })
            .collect(),
    }
}

fn donation_from_row(r: DonationRow) -> DonationNode {
    DonationNode {
        id: ID(r.donation_id),
        donor_id: ID(r.donor_id),
        status: r.status,
        food_type: r.food_type.into(),
        quantity_kg: r.quantity_kg,
        location: Location {
            lat: r.lat,
            lng: r.lng,
        },
        pickup_by: r.pickup_by,
        expires_at: r.expires_at,
        claimed_by: r.claimed_by.map(ID),
        matches: r
            .proposals
            .into_iter()
            .map(|p| Match {
                charity_id: ID(p.charity_id),
                distance_km: p.distance_km,
                score: p.score,
            })
            .collect(),
    }
}

/// A donation's status, to filter lists by (`Donation.status` holds the same names).
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum DonationStatus {
    Open,
    Claimed,
    PickedUp,
    Delivered,
    Expired,
    Cancelled,
}

/// The domain's status (which also has `Unposted`, never listed, so not a `remote` enum): its
/// `as_str` is the one spelling of the names the read model stores.
impl From<DonationStatus> for triad_domain::donation::DonationStatus {
    fn from(status: DonationStatus) -> Self {
        use triad_domain::donation::DonationStatus as Domain;
        match status {
            DonationStatus::Open => Domain::Open,
            DonationStatus::Claimed => Domain::Claimed,
            DonationStatus::PickedUp => Domain::PickedUp,
            DonationStatus::Delivered => Domain::Delivered,
            DonationStatus::Expired => Domain::Expired,
            DonationStatus::Cancelled => Domain::Cancelled,
        }
    }
}

/// Cursor kinds of the owners' lists (see `super::encode_cursor`).
const DONATION_CURSOR: &str = "donation";
const CHARITY_CURSOR: &str = "charity";

/// Whose list an owner query reads: the caller's own (`role`), or for an admin the `owner`
/// they name. Anyone else, or a non-admin naming someone else, is FORBIDDEN.
fn list_owner(
    ctx: &Context<'_>,
    role: Role,
    owner: Option<ID>,
    arg: &str,
) -> async_graphql::Result<String> {
    let actor = require(ctx, &[role, Role::Admin])?;
    match (actor.role, owner) {
        (Role::Admin, Some(id)) => Ok(id.to_string()),
        (Role::Admin, None) => Err(invalid_input(format!("an admin must name {arg}"))),
        (_, Some(id)) if id.as_str() != actor.sub.as_str() => {
            Err(forbidden(format!("only an admin may name another {arg}")))
        }
        _ => Ok(actor.sub.to_string()),
    }
}

#[derive(SimpleObject, Clone)]
pub struct CharityDistance {
    pub charity: CharityNode,
    pub distance_km: f64,
}

#[derive(InputObject)]
pub struct RegisterCharityInput {
    pub name: String,
    pub location: LocationInput,
    /// Daily capacity.
    pub capacity_kg: f64,
    pub accepts: Vec<FoodType>,
    /// When the charity can collect (UTC); omitted: at any time.
    pub pickup_hours: Option<PickupHoursInput>,
}

/// A daily collection window in UTC, "HH:MM" to "HH:MM" (an end before the start runs
/// overnight).
#[derive(InputObject, SimpleObject, Clone)]
#[graphql(name = "PickupHours", input_name = "PickupHoursInput")]
pub struct PickupHoursInput {
    pub opens_at: String,
    pub closes_at: String,
}

#[derive(InputObject)]
pub struct PostDonationInput {
    pub food_type: FoodType,
    pub quantity_kg: f64,
    pub location: LocationInput,
    pub pickup_by: DateTime<Utc>,
    /// When the food is no longer fit to eat; defaults to 24 hours after pickupBy.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct DonationQuery;

#[Object]
impl DonationQuery {
    /// Charities within `radiusKm` of a point (accepting `foodType`, if given), nearest
    /// first, great-circle distances. Served from the in-memory index; public.
    async fn charities_near(
        &self,
        ctx: &Context<'_>,
        lat: f64,
        lng: f64,
        radius_km: f64,
        food_type: Option<FoodType>,
    ) -> async_graphql::Result<Vec<CharityDistance>> {
        let center = point(LocationInput { lat, lng })?;
        if !radius_km.is_finite() || radius_km <= 0.0 || radius_km > MAX_RADIUS_KM {
            return Err(invalid_input(format!(
                "radiusKm must be more than 0 and at most {MAX_RADIUS_KM}"
            )));
        }
        let s = services(ctx)?;
        let hits = s.geo.near(center, radius_km, food_type.map(Into::into));
        let mut out = Vec::with_capacity(hits.len().min(MAX_RESULTS));
        for hit in hits.into_iter().take(MAX_RESULTS) {
            let (c, _) = s
                .charities
                .load(&hit.charity_id)
                .await
                .map_err(errors::internal)?;
            out.push(CharityDistance {
                charity: charity_node(&c),
                distance_km: hit.distance_km,
            });
        }
        Ok(out)
    }

    async fn charity(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<CharityNode>> {
        let (c, _) = services(ctx)?
            .charities
            .load(id.as_str())
            .await
            .map_err(errors::internal)?;
        Ok(c.id.is_some().then(|| charity_node(&c)))
    }

    async fn donation(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<DonationNode>> {
        let (d, _) = services(ctx)?
            .donations
            .load(id.as_str())
            .await
            .map_err(errors::internal)?;
        Ok(d.id.is_some().then(|| donation_node(&d)))
    }

    /// The signed-in donor's donations (with `status`, if given), newest first: a Relay
    /// connection. An admin names the donor with `donorId`. From the read model, so a
    /// donation just posted shows a few milliseconds later.
    async fn my_donations(
        &self,
        ctx: &Context<'_>,
        donor_id: Option<ID>,
        status: Option<DonationStatus>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, DonationNode>> {
        let donor = list_owner(ctx, Role::Donor, donor_id, "donorId")?;
        let first = super::page_size(first)?;
        let before = after
            .as_deref()
            .map(|cursor| super::decode_cursor(DONATION_CURSOR, cursor))
            .transpose()?;
        let s = services(ctx)?;
        let (rows, more) = views::donations_of_donor(
            s.store.read_pool(),
            &donor,
            status.map(|s| triad_domain::donation::DonationStatus::from(s).as_str()),
            first,
            before,
        )
        .await
        .map_err(errors::internal)?;
        Ok(super::position_connection(
            DONATION_CURSOR,
            before,
            more,
            rows.into_iter().map(|r| (r.position, donation_from_row(r))),
        ))
    }

    /// The charities the signed-in charity user manages, newest first. A Relay connection,
    /// not a list: nothing bounds how many charities one user registers. An admin names the
    /// manager with `managerId`. Listed from the read model; each charity is then read from
    /// its aggregate, like every `Charity`, so capacity figures are current.
    async fn my_charities(
        &self,
        ctx: &Context<'_>,
        manager_id: Option<ID>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, CharityNode>> {
        let manager = list_owner(ctx, Role::Charity, manager_id, "managerId")?;
        let first = super::page_size(first)?;
        let before = after
            .as_deref()
            .map(|cursor| super::decode_cursor(CHARITY_CURSOR, cursor))
            .transpose()?;
        let s = services(ctx)?;
        let (ids, more) = views::charities_of_manager(s.store.read_pool(), &manager, first, before)
            .await
            .map_err(errors::internal)?;
        let mut nodes = Vec::with_capacity(ids.len());
        for (id, position) in ids {
            let (c, _) = s.charities.load(&id).await.map_err(errors::internal)?;
            nodes.push((position, charity_node(&c)));
        }
        Ok(super::position_connection(
            CHARITY_CURSOR,
            before,
            more,
            nodes,
        ))
    }
}

#[derive(Default)]
pub struct DonationMutation;

#[Object]
impl DonationMutation {
    /// Registers a charity managed by the caller (charity role).
    async fn register_charity(
        &self,
        ctx: &Context<'_>,
        input: RegisterCharityInput,
    ) -> async_graphql::Result<CharityNode> {
        let actor = require(ctx, &[Role::Charity])?.clone();
        let location = point(input.location)?;
        let id = uuid::Uuid::now_v7().to_string();
        let command = CharityCommand::Register {
            charity_id: id.clone(),
            manager: actor.sub.clone(),
            name: input.name,
            location,
            capacity_kg: input.capacity_kg,
            accepts: input.accepts.into_iter().map(Into::into).collect(),
            pickup_hours: input
                .pickup_hours
                .map(|h| {
                    PickupHours::parse(&h.opens_at, &h.closes_at)
                        .map_err(|e| invalid_input(e.to_string()))
                })
                .transpose()?,
            now: Utc::now(),
        };
        let s = services(ctx)?;
        let outcome = s
            .charities
            .execute(
                &id,
                command,
                CommandContext::new(actor, super::correlation_id(ctx)),
            )
            .await
            .map_err(donation_error)?;
        Ok(charity_node(&outcome.state))
    }

    /// Changes a charity's daily capacity or accepted food types (its manager or an admin).
    async fn update_charity(
        &self,
        ctx: &Context<'_>,
        charity_id: ID,
        capacity_kg: Option<f64>,
        accepts: Option<Vec<FoodType>>,
    ) -> async_graphql::Result<CharityNode> {
        let actor = require(ctx, &[Role::Charity, Role::Admin])?.clone();
        let command = CharityCommand::Update {
            by: actor.clone(),
            capacity_kg,
            accepts: accepts.map(|a| a.into_iter().map(Into::into).collect()),
            now: Utc::now(),
        };
        let s = services(ctx)?;
        let outcome = s
            .charities
            .execute(
                charity_id.as_str(),
                command,
                CommandContext::new(actor, super::correlation_id(ctx)),
            )
            .await
            .map_err(donation_error)?;
        Ok(charity_node(&outcome.state))
    }

    /// Posts surplus food (donor). Returns at once; the matcher proposes charities shortly.
    async fn post_donation(
        &self,
        ctx: &Context<'_>,
        input: PostDonationInput,
    ) -> async_graphql::Result<DonationNode> {
        let actor = require(ctx, &[Role::Donor])?.clone();
        let location = point(input.location)?;
        let id = uuid::Uuid::now_v7().to_string();
        let command = DonationCommand::Post {
            donation_id: id.clone(),
            donor: actor.sub.clone(),
            food_type: input.food_type.into(),
            quantity_kg: input.quantity_kg,
            location,
            pickup_by: input.pickup_by,
            expires_at: input
                .expires_at
                .unwrap_or(input.pickup_by + Duration::hours(24)),
            now: Utc::now(),
        };
        let s = services(ctx)?;
        let outcome = s
            .donations
            .execute(
                &id,
                command,
                CommandContext::new(actor, super::correlation_id(ctx)),
            )
            .await
            .map_err(donation_error)?;
        Ok(donation_node(&outcome.state))
    }

    /// Claims a donation for a charity (its manager). Reserves the quantity on the charity's
    /// pickup day first (refused beyond capacity), then claims; if the donation went to
    /// someone else meanwhile, the reservation is released.
    async fn claim_donation(
        &self,
        ctx: &Context<'_>,
        donation_id: ID,
        charity_id: ID,
    ) -> async_graphql::Result<DonationNode> {
        let actor = require(ctx, &[Role::Charity, Role::Admin])?.clone();
        let s = services(ctx)?;
        let (charity, _) = s
            .charities
            .load(charity_id.as_str())
            .await
            .map_err(errors::internal)?;
        if charity.id.is_none() {
            return Err(not_found(format!("no charity {:?}", charity_id.as_str())));
        }
        if actor.role != Role::Admin && charity.manager.as_ref() != Some(&actor.sub) {
            return Err(forbidden("only the charity's manager may claim for it"));
        }
        let (donation, _) = s
            .donations
            .load(donation_id.as_str())
            .await
            .map_err(errors::internal)?;
        let (Some(day), Some(food)) = (donation.pickup_day(), donation.food_type) else {
            return Err(not_found(format!("no donation {:?}", donation_id.as_str())));
        };
        if donation.claimed_by.as_deref() == Some(charity_id.as_str()) {
            return Ok(donation_node(&donation));
        }
        let context = || CommandContext::new(actor.clone(), super::correlation_id(ctx));
        let reserve = CharityCommand::Reserve {
            donation_id: donation_id.to_string(),
            day,
            kg: donation.quantity_kg,
            food_type: food,
        };
        s.charities
            .execute(charity_id.as_str(), reserve, context())
            .await
            .map_err(donation_error)?;
        let claim = DonationCommand::Claim {
            charity_id: charity_id.to_string(),
            now: Utc::now(),
        };
        match s
            .donations
            .execute(donation_id.as_str(), claim, context())
            .await
        {
            Ok(outcome) => {
                let reservation = Reservation {
                    charity_id: charity_id.as_str(),
                    donation_id: donation_id.as_str(),
                    day,
                    kg: donation.quantity_kg,
                    food_type: food,
                };
                ensure_reserved(&s.charities, &reservation, context()).await;
                Ok(donation_node(&outcome.state))
            }
            Err(e) => {
                // Compensation: give the capacity back.
                let release = CharityCommand::Release {
                    donation_id: donation_id.to_string(),
                    day,
                };
                if let Err(undo) = s
                    .charities
                    .execute(charity_id.as_str(), release, context())
                    .await
                {
                    tracing::error!(error = %undo, donation = %donation_id.as_str(), charity = %charity_id.as_str(), "could not release a reservation after a failed claim");
                }
                Err(donation_error(e))
            }
        }
    }
}

struct Reservation<'a> {
    charity_id: &'a str,
    donation_id: &'a str,
    day: chrono::NaiveDate,
    kg: f64,
    food_type: DomainFood,
}

/// After a claim: reserves again if the reservation was swept while the claim was in flight
/// (a claim slower than the sweeper's grace, or a retry that found a crashed claim's old
/// reservation just as it was swept). The claim reads the charity after claiming, the sweeper
/// reads the donation after releasing, so one of the two always sees the other and reserves
/// again. The claim stands either way: failures here are logged, not returned.
async fn ensure_reserved(
    charities: &AggregateStore<Charity>,
    r: &Reservation<'_>,
    context: CommandContext,
) {
    let held = match charities.load(r.charity_id).await {
        Ok((charity, _)) => charity
            .reserved
            .get(&r.day)
            .is_some_and(|d| d.contains_key(r.donation_id)),
        Err(e) => {
            tracing::error!(error = %e, donation = %r.donation_id, charity = %r.charity_id, "could not check a claim's reservation");
            return;
        }
    };
    if held {
        return;
    }
    let reserve = CharityCommand::Reserve {
        donation_id: r.donation_id.to_string(),
        day: r.day,
        kg: r.kg,
        food_type: r.food_type,
    };
    match charities.execute(r.charity_id, reserve, context).await {
        Ok(_) => {
            tracing::warn!(donation = %r.donation_id, charity = %r.charity_id, "a claim's reservation was swept while it was in flight: reserved again")
        }
        Err(e) => {
            tracing::error!(error = %e, donation = %r.donation_id, charity = %r.charity_id, "a claim's reservation was swept while it was in flight, and it could not be reserved again")
        }
    }
}

/// A charity proposed for a donation, as pushed to that charity.
#[derive(SimpleObject, Clone)]
pub struct DonationMatched {
    pub donation_id: ID,
    pub charity_id: ID,
    pub distance_km: f64,
    /// Global log position: pass it as `after` to resume without gaps or duplicates.
    pub position: i64,
}

#[derive(Default)]
pub struct DonationSubscription;

#[Subscription]
impl DonationSubscription {
    /// Donations the matcher proposes to one charity (its manager or an admin). Resume from
    /// a position with `after`.
    async fn donation_matched(
        &self,
        ctx: &Context<'_>,
        charity_id: ID,
        after: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<DonationMatched>>> {
        let actor = require(ctx, &[Role::Charity, Role::Admin])?.clone();
        let s = services(ctx)?;
        let (charity, _) = s
            .charities
            .load(charity_id.as_str())
            .await
            .map_err(errors::internal)?;
        if charity.id.is_none() {
            return Err(not_found(format!("no charity {:?}", charity_id.as_str())));
        }
        if actor.role != Role::Admin && charity.manager.as_ref() != Some(&actor.sub) {
            return Err(forbidden(
                "only the charity's manager may watch its matches",
            ));
        }
        let filter = LogFilter {
            aggregate_type: Some(DonationState::TYPE.to_string()),
            aggregate_id: None,
            event_types: vec!["MatchesProposed".to_string()],
        };
        let events = super::live::events(ctx, &s.tail, after, filter)?;
        let me = charity_id.to_string();
        Ok(events.filter_map(move |item| {
            let result = (|| {
                let recorded = item?;
                let Ok(DonationEvent::MatchesProposed { proposals, .. }) =
                    recorded.decode::<DonationEvent>()
                else {
                    return Ok(None);
                };
                Ok(proposals
                    .iter()
                    .find(|p| p.charity_id == me)
                    .map(|p| DonationMatched {
                        donation_id: ID(recorded.aggregate_id.clone()),
                        charity_id: ID(me.clone()),
                        distance_km: p.distance_km,
                        position: recorded.position,
                    }))
            })();
            futures::future::ready(result.transpose())
        }))
    }
}
