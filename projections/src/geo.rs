//! The in-memory geo index of charities (every replica has one), fed from the log.
//!
//! Points live on the unit sphere in 3D (`GeoPoint::unit_vector`): straight-line distance
//! there grows monotonically with great-circle distance, so an R-tree radius query over those
//! points is an exact prefilter anywhere on Earth (poles and the antimeridian included). Hits
//! are then measured by haversine, filtered to the radius and sorted nearest first. Never a
//! full scan: a 10 km query touches only the tree nodes near the point.

use parking_lot::RwLock;
use rstar::{PointDistance, RTree, RTreeObject, AABB};
use std::collections::HashMap;
use triad_domain::donation::{CharityEvent, FoodType};
use triad_domain::geo::{chord_for_km, GeoPoint};
use triad_eventstore::{Position, RecordedEvent};

#[derive(Debug, Clone, PartialEq)]
pub struct CharityPoint {
    pub charity_id: String,
    pub location: GeoPoint,
    xyz: [f64; 3],
    /// Accepted food types as a bit set (by `FoodType::ALL` index).
    accepts: u8,
    pub capacity_kg: f64,
}

fn bits(types: &[FoodType]) -> u8 {
    types.iter().fold(0, |acc, t| {
        acc | 1 << FoodType::ALL.iter().position(|x| x == t).unwrap_or(0)
    })
}

impl CharityPoint {
    pub fn new(
        charity_id: String,
        location: GeoPoint,
        accepts: &[FoodType],
        capacity_kg: f64,
    ) -> Self {
        CharityPoint {
            charity_id,
            xyz: location.unit_vector(),
            location,
            accepts: bits(accepts),
            capacity_kg,
        }
    }

    pub fn accepts(&self, food: FoodType) -> bool {
        self.accepts & bits(&[food]) != 0
    }
}

impl RTreeObject for CharityPoint {
    type Envelope = AABB<[f64; 3]>;
    fn envelope(&self) -> Self::Envelope {
        AABB::from_point(self.xyz)
    }
}

impl PointDistance for CharityPoint {
    fn distance_2(&self, p: &[f64; 3]) -> f64 {
        (0..3).map(|i| (self.xyz[i] - p[i]).powi(2)).sum()
    }
}

/// A hit: the charity and its great-circle distance.
#[derive(Debug, Clone, PartialEq)]
pub struct Near {
    pub charity_id: String,
    pub distance_km: f64,
}

#[derive(Default)]
struct Inner {
    tree: RTree<CharityPoint>,
    by_id: HashMap<String, CharityPoint>,
    position: Position,
}

/// Thread-safe; readers never wait for long (writes are single-point updates).
#[derive(Default)]
pub struct GeoIndex {
    inner: RwLock<Inner>,
}

impl GeoIndex {
    /// Bulk-loads points (much faster than inserting one by one).
    pub fn bulk(points: Vec<CharityPoint>) -> Self {
        let by_id = points
            .iter()
            .map(|p| (p.charity_id.clone(), p.clone()))
            .collect();
        GeoIndex {
            inner: RwLock::new(Inner {
                tree: RTree::bulk_load(points),
                by_id,
                position: 0,
            }),
        }
    }

    pub fn len(&self) -> usize {
        self.inner.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last log position applied.
    pub fn position(&self) -> Position {
        self.inner.read().position
    }

    pub fn upsert(&self, point: CharityPoint) {
        let mut inner = self.inner.write();
        if let Some(old) = inner.by_id.insert(point.charity_id.clone(), point.clone()) {
            inner.tree.remove(&old);
        }
        inner.tree.insert(point);
    }

    /// Applies a log event (charity registered or updated); others only move the position.
    pub fn apply(&self, e: &RecordedEvent) {
        if e.aggregate_type == "Charity" {
            match e.decode::<CharityEvent>() {
                Ok(CharityEvent::CharityRegistered {
                    charity_id,
                    location,
                    capacity_kg,
                    accepts,
                    ..
                }) => {
                    self.upsert(CharityPoint::new(
                        charity_id,
                        location,
                        &accepts,
                        capacity_kg,
                    ));
                }
                Ok(CharityEvent::CharityUpdated {
                    capacity_kg,
                    accepts,
                    ..
                }) => {
                    let existing = self.inner.read().by_id.get(&e.aggregate_id).cloned();
                    if let Some(p) = existing {
                        self.upsert(CharityPoint::new(
                            p.charity_id,
                            p.location,
                            &accepts,
                            capacity_kg,
                        ));
                    }
                }
                _ => {}
            }
        }
        let mut inner = self.inner.write();
        inner.position = inner.position.max(e.position);
    }

    /// Charities within `radius_km` of `center` (accepting `food`, if given), nearest first
    /// (ties by id), exact great-circle distances.
    pub fn near(&self, center: GeoPoint, radius_km: f64, food: Option<FoodType>) -> Vec<Near> {
        let xyz = center.unit_vector();
        let chord = chord_for_km(radius_km);
        // A hair of slack on the prefilter; the haversine filter below is the exact test.
        let reach = (chord * (1.0 + 1e-9) + 1e-12).powi(2);
        let inner = self.inner.read();
        let mut hits: Vec<Near> = inner
            .tree
            .locate_within_distance(xyz, reach)
            .filter(|p| food.is_none_or(|f| p.accepts(f)))
            .map(|p| Near {
                charity_id: p.charity_id.clone(),
                distance_km: center.distance_km(p.location),
            })
            .filter(|n| n.distance_km <= radius_km)
            .collect();
        hits.sort_by(|a, b| {
            a.distance_km
                .total_cmp(&b.distance_km)
                .then_with(|| a.charity_id.cmp(&b.charity_id))
        });
        hits
    }

    pub fn get(&self, id: &str) -> Option<CharityPoint> {
        self.inner.read().by_id.get(id).cloned()
    }
}

/// The same query by brute force (for tests and the benchmark's baseline).
pub fn brute_force(
    points: &[CharityPoint],
    center: GeoPoint,
    radius_km: f64,
    food: Option<FoodType>,
) -> Vec<Near> {
    let mut hits: Vec<Near> = points
        .iter()
        .filter(|p| food.is_none_or(|f| p.accepts(f)))
        .map(|p| Near {
            charity_id: p.charity_id.clone(),
            distance_km: center.distance_km(p.location),
        })
        .filter(|n| n.distance_km <= radius_km)
        .collect();
    hits.sort_by(|a, b| {
        a.distance_km
            .total_cmp(&b.distance_km)
            .then_with(|| a.charity_id.cmp(&b.charity_id))
    });
    hits
}
