//! The matcher: a process manager that proposes charities for each posted donation.
//!
//! It follows the log in order with its own checkpoint and its own view of the world (a geo
//! index and each charity's reserved capacity per day, built from the events before the
//! donation), so its decision for a donation depends only on the log before it: replaying
//! the log reproduces it. `postDonation` returns at once; the proposal follows. A decision is
//! recorded by `Donation` only once, so a retried batch never acts twice.

use crate::geo::GeoIndex;
use crate::runner::ProjectionError;
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use triad_domain::donation::{
    CharityEvent, Donation, DonationCommand, DonationEvent, FoodType, PickupHours, Proposal,
};
use triad_domain::geo::GeoPoint;
use triad_domain::Actor;
use triad_eventstore::{AggregateStore, CommandContext, EventStore, Position, RecordedEvent};

pub const NAME: &str = "matcher";
/// How far a donation looks for charities.
pub const MATCH_RADIUS_KM: f64 = 25.0;
/// Charities proposed per donation.
pub const PROPOSALS: usize = 3;

/// A posted donation the matcher found no charity for (yet).
#[derive(Debug, Clone)]
struct Waiting {
    location: GeoPoint,
    food: FoodType,
    kg: f64,
    pickup_by: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

#[derive(Default)]
struct World {
    index: GeoIndex,
    capacity: HashMap<String, f64>,
    reserved: HashMap<(String, NaiveDate), f64>,
    hours: HashMap<String, PickupHours>,
    /// Open donations without a proposal: matched again when a charity gains room or appears.
    waiting: HashMap<String, Waiting>,
}

impl World {
    fn learn(&mut self, e: &RecordedEvent) {
        if e.aggregate_type == "Donation" {
            match e.decode::<DonationEvent>() {
                Ok(DonationEvent::DonationPosted {
                    location,
                    food_type,
                    quantity_kg,
                    pickup_by,
                    expires_at,
                    ..
                }) => {
                    self.waiting.insert(
                        e.aggregate_id.clone(),
                        Waiting {
                            location,
                            food: food_type,
                            kg: quantity_kg,
                            pickup_by,
                            expires_at,
                        },
                    );
                }
                Ok(DonationEvent::MatchesProposed { proposals, .. }) if proposals.is_empty() => {}
                Ok(_) => {
                    // Matched, claimed, expired or cancelled: no longer waiting.
                    self.waiting.remove(&e.aggregate_id);
                }
                Err(_) => {}
            }
            return;
        }
        if e.aggregate_type != "Charity" {
            return;
        }
        self.index.apply(e);
        match e.decode::<CharityEvent>() {
            Ok(CharityEvent::CharityRegistered {
                charity_id,
                capacity_kg,
                pickup_hours,
                ..
            }) => {
                if let Some(h) = pickup_hours {
                    self.hours.insert(charity_id.clone(), h);
                }
                self.capacity.insert(charity_id, capacity_kg);
            }
            Ok(CharityEvent::CharityUpdated { capacity_kg, .. }) => {
                self.capacity.insert(e.aggregate_id.clone(), capacity_kg);
            }
            Ok(CharityEvent::CapacityReserved { day, kg, .. }) => {
                *self
                    .reserved
                    .entry((e.aggregate_id.clone(), day))
                    .or_default() += kg
            }
            Ok(CharityEvent::CapacityReleased { day, kg, .. }) => {
                *self
                    .reserved
                    .entry((e.aggregate_id.clone(), day))
                    .or_default() -= kg
            }
            _ => {}
        }
    }

    /// Best charities for a donation: near, with room that day, accepting the food type, and
    /// able to collect between `now` and the pickup deadline. Score (lower is better):
    /// distance dominates; fuller charities, a later collection and food close to expiry
    /// tilt it.
    fn propose(&self, w: &Waiting, now: DateTime<Utc>) -> Vec<Proposal> {
        let Waiting {
            location,
            food,
            kg,
            pickup_by,
            expires_at,
            ..
        } = w.clone();
        let day = pickup_by.date_naive();
        let urgency =
            ((expires_at - pickup_by).num_minutes() as f64 / (24.0 * 60.0)).clamp(0.0, 1.0);
        let mut scored: Vec<Proposal> = self
            .index
            .near(location, MATCH_RADIUS_KM, Some(food))
            .into_iter()
            .filter_map(|n| {
                let capacity = *self.capacity.get(&n.charity_id)?;
                let free = capacity
                    - self
                        .reserved
                        .get(&(n.charity_id.clone(), day))
                        .copied()
                        .unwrap_or(0.0);
                if free + 1e-9 < kg {
                    return None;
                }
                let collects = match self.hours.get(&n.charity_id) {
                    Some(h) => h.first_open(now, pickup_by)?,
                    None => now,
                };
                let window = (pickup_by - now).num_seconds().max(1) as f64;
                let wait = (collects - now).num_seconds().max(0) as f64 / window;
                let fullness = 1.0 - free / capacity.max(f64::MIN_POSITIVE);
                let score = n.distance_km / MATCH_RADIUS_KM
                    + 0.2 * fullness
                    + 0.2 * wait
                    + 0.1 * (1.0 - urgency) * n.distance_km / MATCH_RADIUS_KM;
                Some(Proposal {
                    charity_id: n.charity_id,
                    distance_km: n.distance_km,
                    score,
                })
            })
            .collect();
        scored.sort_by(|a, b| {
            a.score
                .total_cmp(&b.score)
                .then_with(|| a.charity_id.cmp(&b.charity_id))
        });
        scored.truncate(PROPOSALS);
        scored
    }
}

pub struct Matcher {
    store: EventStore,
    donations: Arc<AggregateStore<Donation>>,
}

impl Matcher {
    pub async fn start(
        store: EventStore,
        donations: Arc<AggregateStore<Donation>>,
    ) -> Result<tokio::task::JoinHandle<()>, ProjectionError> {
        crate::runner::register_checkpoint(store.read_pool(), NAME, 1).await?;
        let matcher = Matcher { store, donations };
        Ok(tokio::spawn(async move { matcher.run().await }))
    }

    async fn run(self) {
        loop {
            if let Err(e) = self.follow().await {
                metrics::counter!("triad_projection_errors_total", "projection" => NAME)
                    .increment(1);
                tracing::error!(error = %e, "matcher failed; restarting from its checkpoint");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    async fn follow(&self) -> Result<(), ProjectionError> {
        let mut checkpoint = crate::runner::checkpoint(self.store.read_pool(), NAME).await?;
        let mut world = World::default();
        let mut log = self.store.subscribe_all(1).ready_chunks(500);
        while let Some(chunk) = log.next().await {
            let events: Vec<RecordedEvent> = chunk.into_iter().collect::<Result<_, _>>()?;
            let Some(last) = events.last().map(|e| e.position) else {
                continue;
            };
            for e in &events {
                let fresh = e.position > checkpoint;
                if e.aggregate_type == "Charity" {
                    // A new or roomier charity may suit donations still waiting.
                    world.learn(e);
                    if fresh {
                        self.rematch(&world, e).await?;
                    }
                } else {
                    if fresh {
                        self.decide(&world, e).await?;
                    }
                    world.learn(e);
                }
            }
            if last > checkpoint {
                if !crate::runner::advance_checkpoint(
                    self.store.read_pool(),
                    NAME,
                    checkpoint,
                    last,
                )
                .await?
                {
                    // Another replica's matcher is ahead: take its checkpoint.
                    checkpoint = crate::runner::checkpoint(self.store.read_pool(), NAME).await?;
                } else {
                    checkpoint = last;
                }
                metrics::gauge!("triad_projection_position", "projection" => NAME)
                    .set(checkpoint as f64);
            }
        }
        Ok(())
    }

    async fn decide(&self, world: &World, e: &RecordedEvent) -> Result<(), ProjectionError> {
        if e.aggregate_type != "Donation" {
            return Ok(());
        }
        let Ok(DonationEvent::DonationPosted {
            location,
            food_type,
            quantity_kg,
            pickup_by,
            expires_at,
            posted_at,
            ..
        }) = e.decode::<DonationEvent>()
        else {
            return Ok(());
        };
        let waiting = Waiting {
            location,
            food: food_type,
            kg: quantity_kg,
            pickup_by,
            expires_at,
        };
        let proposals = world.propose(&waiting, posted_at);
        self.record(&e.aggregate_id, proposals, e).await
    }

    /// After a charity appears or changes: propose for donations still waiting near it.
    async fn rematch(&self, world: &World, e: &RecordedEvent) -> Result<(), ProjectionError> {
        if !matches!(
            e.event_type.as_str(),
            "CharityRegistered" | "CharityUpdated"
        ) {
            return Ok(());
        }
        let Some(charity) = world.index.get(&e.aggregate_id) else {
            return Ok(());
        };
        let now = e.recorded_at;
        let mut candidates: Vec<(&String, &Waiting)> = world
            .waiting
            .iter()
            .filter(|(_, w)| {
                w.expires_at > now
                    && w.pickup_by > now
                    && w.location.distance_km(charity.location) <= MATCH_RADIUS_KM
            })
            .collect();
        candidates.sort_by(|a, b| a.0.cmp(b.0));
        for (donation, w) in candidates {
            let proposals = world.propose(w, now);
            if !proposals.is_empty() {
                self.record(donation, proposals, e).await?;
            }
        }
        Ok(())
    }

    async fn record(
        &self,
        donation: &str,
        proposals: Vec<Proposal>,
        e: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let mut ctx = CommandContext::new(
            Actor::system("matcher"),
            e.metadata().map(|m| m.correlation_id).unwrap_or_default(),
        );
        ctx.causation_id = e.metadata().map(|m| m.event_id).unwrap_or_default();
        let now = e.recorded_at;
        self.donations
            .execute(
                donation,
                DonationCommand::ProposeMatches { proposals, now },
                ctx,
            )
            .await
            .map_err(|err| {
                ProjectionError::Invalid(format!("proposing matches for {donation}: {err}"))
            })?;
        Ok(())
    }
}

/// Position helper for tests: the matcher's checkpoint.
pub async fn position(store: &EventStore) -> Result<Position, ProjectionError> {
    crate::runner::checkpoint(store.read_pool(), NAME).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::CharityPoint;

    #[test]
    fn proposes_the_nearest_with_room_and_the_right_food() {
        let mut w = World::default();
        let here = GeoPoint::parse(52.0, 4.0).unwrap();
        for (id, lat, cap, food) in [
            ("near", 52.01, 10.0, FoodType::Bakery),
            ("far", 52.1, 10.0, FoodType::Bakery),
            ("full", 52.0, 1.0, FoodType::Bakery),
            ("meat", 52.0, 10.0, FoodType::Meat),
        ] {
            w.index.upsert(CharityPoint::new(
                id.into(),
                GeoPoint::parse(lat, 4.0).unwrap(),
                &[food],
                cap,
            ));
            w.capacity.insert(id.into(), cap);
        }
        let t = Utc::now();
        let waiting = Waiting {
            location: here,
            food: FoodType::Bakery,
            kg: 5.0,
            pickup_by: t + chrono::Duration::hours(2),
            expires_at: t + chrono::Duration::hours(6),
        };
        let p = w.propose(&waiting, t);
        let ids: Vec<&str> = p.iter().map(|p| p.charity_id.as_str()).collect();
        assert_eq!(ids, ["near", "far"]);
    }
}
