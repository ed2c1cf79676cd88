//! Coordinates and great-circle distance.

use serde::{Deserialize, Serialize};

/// Mean Earth radius (IUGG), the sphere all Triad distances are measured on.
pub const EARTH_RADIUS_KM: f64 = 6_371.008_8;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GeoPoint {
    pub lat: f64,
    pub lng: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeoError {
    #[error("latitude must be a number within -90..=90 (got {0})")]
    Latitude(f64),
    #[error("longitude must be a number within -180..=180 (got {0})")]
    Longitude(f64),
}

impl GeoPoint {
    pub fn parse(lat: f64, lng: f64) -> Result<GeoPoint, GeoError> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(GeoError::Latitude(lat));
        }
        if !lng.is_finite() || !(-180.0..=180.0).contains(&lng) {
            return Err(GeoError::Longitude(lng));
        }
        Ok(GeoPoint { lat, lng })
    }

    /// The point on the unit sphere (x, y, z): straight-line (chord) distance there is a
    /// monotonic function of great-circle distance, so an R-tree over these points answers
    /// radius queries exactly, with no trouble at the poles or the antimeridian.
    pub fn unit_vector(self) -> [f64; 3] {
        let (lat, lng) = (self.lat.to_radians(), self.lng.to_radians());
        [lat.cos() * lng.cos(), lat.cos() * lng.sin(), lat.sin()]
    }

    /// Great-circle distance in km (haversine).
    pub fn distance_km(self, other: GeoPoint) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lng - self.lng).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

/// The chord length on the unit sphere that corresponds to `km` along the surface.
pub fn chord_for_km(km: f64) -> f64 {
    let angle = (km / EARTH_RADIUS_KM).min(std::f64::consts::PI);
    2.0 * (angle / 2.0).sin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_bounds() {
        let paris = GeoPoint::parse(48.8566, 2.3522).unwrap();
        let london = GeoPoint::parse(51.5074, -0.1278).unwrap();
        assert!((paris.distance_km(london) - 343.5).abs() < 1.0);
        let a = GeoPoint::parse(0.0, 179.95).unwrap();
        let b = GeoPoint::parse(0.0, -179.95).unwrap();
        assert!(
            (a.distance_km(b) - 11.12).abs() < 0.05,
            "across the antimeridian"
        );
        assert!(GeoPoint::parse(90.1, 0.0).is_err());
        assert!(GeoPoint::parse(0.0, f64::NAN).is_err());
        assert!(GeoPoint::parse(0.0, -180.5).is_err());
    }
}
