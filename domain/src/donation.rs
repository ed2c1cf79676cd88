//! The food-donation marketplace: charities with a daily capacity, donations matched and
//! claimed.
//!
//! Capacity is owned by the [`Charity`] aggregate: a claim first reserves the donation's
//! quantity on the charity for the pickup day (refused beyond capacity), then claims the
//! donation; if the donation was taken meanwhile, the reservation is released (compensation).
//! A charity is therefore never committed beyond capacity, even under concurrent claims from
//! many replicas (each reservation is one append to the charity's stream, decided against its
//! current state), and a donation is claimed at most once (its own stream decides).

use crate::actor::Actor;
use crate::decider::Decider;
use crate::geo::GeoPoint;
use crate::ids::UserId;
use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Largest quantity or capacity accepted, in kg (a few trucks).
pub const MAX_KG: f64 = 100_000.0;
pub const MAX_NAME_LEN: usize = 200;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FoodType {
    Produce,
    Bakery,
    Dairy,
    Meat,
    Prepared,
    Pantry,
    Frozen,
}

impl FoodType {
    pub const ALL: [FoodType; 7] = [
        FoodType::Produce,
        FoodType::Bakery,
        FoodType::Dairy,
        FoodType::Meat,
        FoodType::Prepared,
        FoodType::Pantry,
        FoodType::Frozen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FoodType::Produce => "PRODUCE",
            FoodType::Bakery => "BAKERY",
            FoodType::Dairy => "DAIRY",
            FoodType::Meat => "MEAT",
            FoodType::Prepared => "PREPARED",
            FoodType::Pantry => "PANTRY",
            FoodType::Frozen => "FROZEN",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DonationError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("capacity exceeded: {requested} kg requested, {remaining} kg left on {day}")]
    CapacityExceeded {
        requested: f64,
        remaining: f64,
        day: NaiveDate,
    },
    #[error("this charity does not accept {0:?}")]
    NotAccepted(FoodType),
    #[error("the donation is no longer available ({0})")]
    Unavailable(&'static str),
    #[error("only the charity's manager may do this")]
    Forbidden,
}

impl DonationError {
    pub fn code(&self) -> &'static str {
        match self {
            DonationError::NotFound => "NOT_FOUND",
            DonationError::AlreadyExists => "CONFLICT",
            DonationError::InvalidInput(_) => "INVALID_INPUT",
            DonationError::CapacityExceeded { .. } => "CAPACITY_EXCEEDED",
            DonationError::NotAccepted(_) => "FOOD_TYPE_NOT_ACCEPTED",
            DonationError::Unavailable(_) => "DONATION_UNAVAILABLE",
            DonationError::Forbidden => "FORBIDDEN",
        }
    }
}

/// Parses a quantity in kg: finite, positive, bounded.
pub fn parse_kg(field: &str, kg: f64) -> Result<f64, DonationError> {
    if !kg.is_finite() || kg <= 0.0 || kg > MAX_KG {
        return Err(DonationError::InvalidInput(format!(
            "{field} must be more than 0 and at most {MAX_KG} kg (got {kg})"
        )));
    }
    Ok(kg)
}

/// When a charity can collect food: a daily window in UTC minutes of the day. A window whose
/// end is before its start runs overnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PickupHours {
    pub opens_at_minute: u16,
    pub closes_at_minute: u16,
}

impl PickupHours {
    /// Parses "HH:MM" times.
    pub fn parse(opens: &str, closes: &str) -> Result<PickupHours, DonationError> {
        let minute = |raw: &str| -> Result<u16, DonationError> {
            let bad = || DonationError::InvalidInput(format!("{raw:?} is not a time like 08:30"));
            let (h, m) = raw.split_once(':').ok_or_else(bad)?;
            let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let hours = PickupHours {
            opens_at_minute: minute(opens)?,
            closes_at_minute: minute(closes)?,
        };
        if hours.opens_at_minute == hours.closes_at_minute {
            return Err(DonationError::InvalidInput(
                "pickup hours must not be empty".into(),
            ));
        }
        Ok(hours)
    }

    /// The first moment in `[from, to]` when the charity is open, if any.
    pub fn first_open(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if from > to {
            return None;
        }
        let open_at = |t: DateTime<Utc>| -> bool {
            let m = (t.timestamp().rem_euclid(86_400) / 60) as u16;
            if self.opens_at_minute < self.closes_at_minute {
                m >= self.opens_at_minute && m < self.closes_at_minute
            } else {
                m >= self.opens_at_minute || m < self.closes_at_minute
            }
        };
        if open_at(from) {
            return Some(from);
        }
        // The next opening after `from` (within a day), if it comes before `to`.
        let day_start = from - chrono::Duration::seconds(from.timestamp().rem_euclid(86_400));
        let today = day_start + chrono::Duration::minutes(self.opens_at_minute as i64);
        let next = if today > from {
            today
        } else {
            today + chrono::Duration::days(1)
        };
        (next <= to).then_some(next)
    }
}

// ---------------------------------------------------------------------------------------
// Charity

#[derive(Debug, Clone, PartialEq)]
pub enum CharityCommand {
    Register {
        charity_id: String,
        manager: UserId,
        name: String,
        location: GeoPoint,
        capacity_kg: f64,
        accepts: Vec<FoodType>,
        /// `None`: collects at any time.
        pickup_hours: Option<PickupHours>,
        now: DateTime<Utc>,
    },
    Update {
        by: Actor,
        capacity_kg: Option<f64>,
        accepts: Option<Vec<FoodType>>,
        now: DateTime<Utc>,
    },
    Reserve {
        donation_id: String,
        day: NaiveDate,
        kg: f64,
        food_type: FoodType,
    },
    Release {
        donation_id: String,
        day: NaiveDate,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CharityEvent {
    CharityRegistered {
        charity_id: String,
        manager: UserId,
        name: String,
        location: GeoPoint,
        capacity_kg: f64,
        accepts: Vec<FoodType>,
        registered_at: DateTime<Utc>,
        /// Added within version 1 (absent in older rows: collects at any time).
        #[serde(default)]
        pickup_hours: Option<PickupHours>,
    },
    CharityUpdated {
        capacity_kg: f64,
        accepts: Vec<FoodType>,
        updated_at: DateTime<Utc>,
    },
    CapacityReserved {
        donation_id: String,
        day: NaiveDate,
        kg: f64,
    },
    CapacityReleased {
        donation_id: String,
        day: NaiveDate,
        kg: f64,
    },
}

impl DomainEvent for CharityEvent {
    fn event_type(&self) -> String {
        match self {
            CharityEvent::CharityRegistered { .. } => "CharityRegistered",
            CharityEvent::CharityUpdated { .. } => "CharityUpdated",
            CharityEvent::CapacityReserved { .. } => "CapacityReserved",
            CharityEvent::CapacityReleased { .. } => "CapacityReleased",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        crate::catalog::version_of(&self.event_type()).to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Charity {
    pub id: Option<String>,
    pub manager: Option<UserId>,
    pub name: String,
    pub location: Option<GeoPoint>,
    pub capacity_kg: f64,
    pub accepts: BTreeSet<FoodType>,
    pub pickup_hours: Option<PickupHours>,
    /// day -> donation -> kg reserved.
    pub reserved: BTreeMap<NaiveDate, BTreeMap<String, f64>>,
}

impl Charity {
    pub fn reserved_on(&self, day: NaiveDate) -> f64 {
        self.reserved.get(&day).map_or(0.0, |d| d.values().sum())
    }

    pub fn remaining_on(&self, day: NaiveDate) -> f64 {
        (self.capacity_kg - self.reserved_on(day)).max(0.0)
    }
}

fn types(list: &[FoodType]) -> Result<Vec<FoodType>, DonationError> {
    let set: BTreeSet<FoodType> = list.iter().copied().collect();
    if set.is_empty() {
        return Err(DonationError::InvalidInput(
            "accepts must name at least one food type".into(),
        ));
    }
    Ok(set.into_iter().collect())
}

impl Decider for Charity {
    type Summary = Charity;

    fn summary(&self) -> Charity {
        self.clone()
    }

    fn decide(&self, command: &CharityCommand) -> Result<Vec<CharityEvent>, DonationError> {
        match command {
            CharityCommand::Register {
                charity_id,
                manager,
                name,
                location,
                capacity_kg,
                accepts,
                pickup_hours,
                now,
            } => {
                if self.id.is_some() {
                    return Err(DonationError::AlreadyExists);
                }
                let name = name.trim();
                if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
                    return Err(DonationError::InvalidInput(format!(
                        "name must have 1 to {MAX_NAME_LEN} characters"
                    )));
                }
                Ok(vec![CharityEvent::CharityRegistered {
                    charity_id: charity_id.clone(),
                    manager: manager.clone(),
                    name: name.to_string(),
                    location: *location,
                    capacity_kg: parse_kg("capacityKg", *capacity_kg)?,
                    accepts: types(accepts)?,
                    registered_at: *now,
                    pickup_hours: *pickup_hours,
                }])
            }
            CharityCommand::Update {
                by,
                capacity_kg,
                accepts,
                now,
            } => {
                if self.id.is_none() {
                    return Err(DonationError::NotFound);
                }
                if by.role != crate::actor::Role::Admin && self.manager.as_ref() != Some(&by.sub) {
                    return Err(DonationError::Forbidden);
                }
                let capacity_kg = match capacity_kg {
                    Some(kg) => parse_kg("capacityKg", *kg)?,
                    None => self.capacity_kg,
                };
                let accepts = match accepts {
                    Some(list) => types(list)?,
                    None => self.accepts.iter().copied().collect(),
                };
                Ok(vec![CharityEvent::CharityUpdated {
                    capacity_kg,
                    accepts,
                    updated_at: *now,
                }])
            }
            CharityCommand::Reserve {
                donation_id,
                day,
                kg,
                food_type,
            } => {
                if self.id.is_none() {
                    return Err(DonationError::NotFound);
                }
                if self
                    .reserved
                    .get(day)
                    .is_some_and(|d| d.contains_key(donation_id))
                {
                    return Ok(vec![]); // this donation's reservation is already held
                }
                if !self.accepts.contains(food_type) {
                    return Err(DonationError::NotAccepted(*food_type));
                }
                let remaining = self.remaining_on(*day);
                // A millionth of a gram of slack for float sums.
                if *kg > remaining + 1e-9 {
                    return Err(DonationError::CapacityExceeded {
                        requested: *kg,
                        remaining,
                        day: *day,
                    });
                }
                Ok(vec![CharityEvent::CapacityReserved {
                    donation_id: donation_id.clone(),
                    day: *day,
                    kg: *kg,
                }])
            }
            CharityCommand::Release { donation_id, day } => {
                let Some(kg) = self.reserved.get(day).and_then(|d| d.get(donation_id)) else {
                    return Ok(vec![]);
                };
                Ok(vec![CharityEvent::CapacityReleased {
                    donation_id: donation_id.clone(),
                    day: *day,
                    kg: *kg,
                }])
            }
        }
    }
}

impl Aggregate for Charity {
    const TYPE: &'static str = "Charity";
    type Command = CharityCommand;
    type Event = CharityEvent;
    type Error = DonationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        crate::decider::handle(self, command, sink).await
    }

    fn apply(&mut self, event: CharityEvent) {
        match event {
            CharityEvent::CharityRegistered {
                charity_id,
                manager,
                name,
                location,
                capacity_kg,
                accepts,
                pickup_hours,
                ..
            } => {
                self.id = Some(charity_id);
                self.pickup_hours = pickup_hours;
                self.manager = Some(manager);
                self.name = name;
                self.location = Some(location);
                self.capacity_kg = capacity_kg;
                self.accepts = accepts.into_iter().collect();
            }
            CharityEvent::CharityUpdated {
                capacity_kg,
                accepts,
                ..
            } => {
                self.capacity_kg = capacity_kg;
                self.accepts = accepts.into_iter().collect();
            }
            CharityEvent::CapacityReserved {
                donation_id,
                day,
                kg,
            } => {
                self.reserved
                    .entry(day)
                    .or_default()
                    .insert(donation_id, kg);
            }
            CharityEvent::CapacityReleased {
                donation_id, day, ..
            } => {
                if let Some(d) = self.reserved.get_mut(&day) {
                    d.remove(&donation_id);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Donation

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DonationStatus {
    #[default]
    Unposted,
    Open,
    Claimed,
    PickedUp,
    Delivered,
    Expired,
    Cancelled,
}

impl DonationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DonationStatus::Unposted => "UNPOSTED",
            DonationStatus::Open => "OPEN",
            DonationStatus::Claimed => "CLAIMED",
            DonationStatus::PickedUp => "PICKED_UP",
            DonationStatus::Delivered => "DELIVERED",
            DonationStatus::Expired => "EXPIRED",
            DonationStatus::Cancelled => "CANCELLED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Proposal {
    pub charity_id: String,
    pub distance_km: f64,
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DonationCommand {
    Post {
        donation_id: String,
        donor: UserId,
        food_type: FoodType,
        quantity_kg: f64,
        location: GeoPoint,
        pickup_by: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    ProposeMatches {
        proposals: Vec<Proposal>,
        now: DateTime<Utc>,
    },
    Claim {
        charity_id: String,
        now: DateTime<Utc>,
    },
    PickUp {
        by: Actor,
        now: DateTime<Utc>,
    },
    Deliver {
        by: Actor,
        now: DateTime<Utc>,
    },
    Expire {
        now: DateTime<Utc>,
    },
    Cancel {
        by: Actor,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DonationEvent {
    DonationPosted {
        donation_id: String,
        donor: UserId,
        food_type: FoodType,
        quantity_kg: f64,
        location: GeoPoint,
        pickup_by: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        posted_at: DateTime<Utc>,
    },
    MatchesProposed {
        proposals: Vec<Proposal>,
        proposed_at: DateTime<Utc>,
    },
    DonationClaimed {
        charity_id: String,
        claimed_at: DateTime<Utc>,
    },
    DonationPickedUp {
        picked_up_at: DateTime<Utc>,
    },
    DonationDelivered {
        delivered_at: DateTime<Utc>,
    },
    DonationExpired {
        expired_at: DateTime<Utc>,
    },
    DonationCancelled {
        cancelled_at: DateTime<Utc>,
    },
}

impl DomainEvent for DonationEvent {
    fn event_type(&self) -> String {
        match self {
            DonationEvent::DonationPosted { .. } => "DonationPosted",
            DonationEvent::MatchesProposed { .. } => "MatchesProposed",
            DonationEvent::DonationClaimed { .. } => "DonationClaimed",
            DonationEvent::DonationPickedUp { .. } => "DonationPickedUp",
            DonationEvent::DonationDelivered { .. } => "DonationDelivered",
            DonationEvent::DonationExpired { .. } => "DonationExpired",
            DonationEvent::DonationCancelled { .. } => "DonationCancelled",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        crate::catalog::version_of(&self.event_type()).to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Donation {
    pub id: Option<String>,
    pub donor: Option<UserId>,
    pub status: DonationStatus,
    pub food_type: Option<FoodType>,
    pub quantity_kg: f64,
    pub location: Option<GeoPoint>,
    pub pickup_by: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub proposals: Vec<Proposal>,
    pub claimed_by: Option<String>,
}

impl Donation {
    /// The day a claim reserves capacity on: the pickup day (UTC).
    pub fn pickup_day(&self) -> Option<NaiveDate> {
        self.pickup_by.map(|t| t.date_naive())
    }
}

impl Decider for Donation {
    type Summary = Donation;

    fn summary(&self) -> Donation {
        self.clone()
    }

    fn decide(&self, command: &DonationCommand) -> Result<Vec<DonationEvent>, DonationError> {
        let exists = || {
            if self.id.is_none() {
                Err(DonationError::NotFound)
            } else {
                Ok(())
            }
        };
        match command {
            DonationCommand::Post {
                donation_id,
                donor,
                food_type,
                quantity_kg,
                location,
                pickup_by,
                expires_at,
                now,
            } => {
                if self.id.is_some() {
                    return Err(DonationError::AlreadyExists);
                }
                let quantity_kg = parse_kg("quantityKg", *quantity_kg)?;
                if pickup_by <= now {
                    return Err(DonationError::InvalidInput(
                        "pickupBy must be in the future".into(),
                    ));
                }
                if expires_at < pickup_by {
                    return Err(DonationError::InvalidInput(
                        "expiresAt must not be before pickupBy".into(),
                    ));
                }
                Ok(vec![DonationEvent::DonationPosted {
                    donation_id: donation_id.clone(),
                    donor: donor.clone(),
                    food_type: *food_type,
                    quantity_kg,
                    location: *location,
                    pickup_by: *pickup_by,
                    expires_at: *expires_at,
                    posted_at: *now,
                }])
            }
            DonationCommand::ProposeMatches { proposals, now } => {
                exists()?;
                if self.status != DonationStatus::Open || !self.proposals.is_empty() {
                    return Ok(vec![]); // decided once; a repeat or a late proposal changes nothing
                }
                Ok(vec![DonationEvent::MatchesProposed {
                    proposals: proposals.clone(),
                    proposed_at: *now,
                }])
            }
            DonationCommand::Claim { charity_id, now } => {
                exists()?;
                match self.status {
                    DonationStatus::Open if self.expires_at.is_some_and(|t| t <= *now) => {
                        Err(DonationError::Unavailable("expired"))
                    }
                    DonationStatus::Open => Ok(vec![DonationEvent::DonationClaimed {
                        charity_id: charity_id.clone(),
                        claimed_at: *now,
                    }]),
                    DonationStatus::Claimed
                        if self.claimed_by.as_deref() == Some(charity_id.as_str()) =>
                    {
                        Ok(vec![])
                    }
                    DonationStatus::Claimed => Err(DonationError::Unavailable("already claimed")),
                    _ => Err(DonationError::Unavailable(self.status.as_str())),
                }
            }
            DonationCommand::PickUp { now, .. } => {
                exists()?;
                match self.status {
                    DonationStatus::Claimed => {
                        Ok(vec![DonationEvent::DonationPickedUp { picked_up_at: *now }])
                    }
                    DonationStatus::PickedUp => Ok(vec![]),
                    _ => Err(DonationError::Unavailable("not claimed")),
                }
            }
            DonationCommand::Deliver { now, .. } => {
                exists()?;
                match self.status {
                    DonationStatus::PickedUp => Ok(vec![DonationEvent::DonationDelivered {
                        delivered_at: *now,
                    }]),
                    DonationStatus::Delivered => Ok(vec![]),
                    _ => Err(DonationError::Unavailable("not picked up")),
                }
            }
            DonationCommand::Expire { now } => {
                exists()?;
                match self.status {
                    DonationStatus::Open if self.expires_at.is_some_and(|t| t <= *now) => {
                        Ok(vec![DonationEvent::DonationExpired { expired_at: *now }])
                    }
                    _ => Ok(vec![]),
                }
            }
            DonationCommand::Cancel { by, now } => {
                exists()?;
                if by.role != crate::actor::Role::Admin && self.donor.as_ref() != Some(&by.sub) {
                    return Err(DonationError::Forbidden);
                }
                match self.status {
                    DonationStatus::Open => Ok(vec![DonationEvent::DonationCancelled {
                        cancelled_at: *now,
                    }]),
                    DonationStatus::Cancelled => Ok(vec![]),
                    _ => Err(DonationError::Unavailable("already claimed")),
                }
            }
        }
    }
}

impl Aggregate for Donation {
    const TYPE: &'static str = "Donation";
    type Command = DonationCommand;
    type Event = DonationEvent;
    type Error = DonationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        crate::decider::handle(self, command, sink).await
    }

    fn apply(&mut self, event: DonationEvent) {
        match event {
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
                self.id = Some(donation_id);
                self.donor = Some(donor);
                self.status = DonationStatus::Open;
                self.food_type = Some(food_type);
                self.quantity_kg = quantity_kg;
                self.location = Some(location);
                self.pickup_by = Some(pickup_by);
                self.expires_at = Some(expires_at);
            }
            DonationEvent::MatchesProposed { proposals, .. } => self.proposals = proposals,
            DonationEvent::DonationClaimed { charity_id, .. } => {
                self.status = DonationStatus::Claimed;
                self.claimed_by = Some(charity_id);
            }
            DonationEvent::DonationPickedUp { .. } => self.status = DonationStatus::PickedUp,
            DonationEvent::DonationDelivered { .. } => self.status = DonationStatus::Delivered,
            DonationEvent::DonationExpired { .. } => self.status = DonationStatus::Expired,
            DonationEvent::DonationCancelled { .. } => self.status = DonationStatus::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn charity(capacity: f64) -> Charity {
        let mut c = Charity::default();
        let events = c
            .decide(&CharityCommand::Register {
                charity_id: "c1".into(),
                manager: UserId::parse("m1").unwrap(),
                name: "Food Bank".into(),
                location: GeoPoint::parse(52.0, 4.0).unwrap(),
                capacity_kg: capacity,
                accepts: vec![FoodType::Produce],
                pickup_hours: None,
                now: Utc::now(),
            })
            .unwrap();
        for e in events {
            c.apply(e);
        }
        c
    }

    proptest! {
        /// Whatever the order and size of reservations and releases, what is reserved for a
        /// day never exceeds the capacity.
        #[test]
        fn never_committed_beyond_capacity(ops in proptest::collection::vec((0u8..20, 0.1f64..6.0, any::<bool>()), 1..120)) {
            let mut c = charity(25.0);
            let day = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
            for (donation, kg, release) in ops {
                let cmd = if release {
                    CharityCommand::Release { donation_id: format!("d{donation}"), day }
                } else {
                    CharityCommand::Reserve { donation_id: format!("d{donation}"), day, kg, food_type: FoodType::Produce }
                };
                if let Ok(events) = c.decide(&cmd) {
                    for e in events { c.apply(e); }
                }
                prop_assert!(c.reserved_on(day) <= 25.0 + 1e-6);
            }
        }
    }

    #[test]
    fn pickup_windows() {
        use chrono::TimeZone;
        let at = |h: u32, m: u32| Utc.with_ymd_and_hms(2026, 3, 1, h, m, 0).unwrap();
        let day = PickupHours::parse("08:00", "18:00").unwrap();
        assert_eq!(day.first_open(at(9, 0), at(10, 0)), Some(at(9, 0)));
        assert_eq!(day.first_open(at(6, 0), at(10, 0)), Some(at(8, 0)));
        assert_eq!(day.first_open(at(19, 0), at(23, 0)), None);
        let night = PickupHours::parse("22:00", "02:00").unwrap();
        assert_eq!(night.first_open(at(23, 0), at(23, 30)), Some(at(23, 0)));
        assert_eq!(night.first_open(at(12, 0), at(21, 0)), None);
        assert!(PickupHours::parse("25:00", "08:00").is_err());
        assert!(PickupHours::parse("08:00", "08:00").is_err());
    }

    #[test]
    fn a_donation_is_claimed_once() {
        let mut d = Donation::default();
        let now = Utc::now();
        for e in d
            .decide(&DonationCommand::Post {
                donation_id: "d1".into(),
                donor: UserId::parse("donor").unwrap(),
                food_type: FoodType::Bakery,
                quantity_kg: 5.0,
                location: GeoPoint::parse(0.0, 0.0).unwrap(),
                pickup_by: now + chrono::Duration::hours(3),
                expires_at: now + chrono::Duration::hours(5),
                now,
            })
            .unwrap()
        {
            d.apply(e);
        }
        for e in d
            .decide(&DonationCommand::Claim {
                charity_id: "a".into(),
                now,
            })
            .unwrap()
        {
            d.apply(e);
        }
        assert_eq!(
            d.decide(&DonationCommand::Claim {
                charity_id: "b".into(),
                now
            })
            .unwrap_err()
            .code(),
            "DONATION_UNAVAILABLE"
        );
        assert!(d
            .decide(&DonationCommand::Claim {
                charity_id: "a".into(),
                now
            })
            .unwrap()
            .is_empty());
    }
}
