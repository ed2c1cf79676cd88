//! Both geo indexes (the in-memory R-tree and PostGIS) against a brute-force haversine scan:
//! 10,000 random charities, 500 random queries, poles and the antimeridian included.

use rand::{Rng, SeedableRng};
use triad_domain::donation::FoodType;
use triad_domain::geo::GeoPoint;
use triad_projections::donations::{enable_postgis, near_postgis};
use triad_projections::geo::{brute_force, CharityPoint, GeoIndex, Near};
use triad_tests::{Backend, TestDb};

fn random_point(rng: &mut impl Rng) -> GeoPoint {
    // Uniform on the sphere.
    let z: f64 = rng.gen_range(-1.0..=1.0);
    GeoPoint::parse(z.asin().to_degrees(), rng.gen_range(-180.0..=180.0)).unwrap()
}

fn near(rng: &mut impl Rng, lat: f64, lng: f64, spread: f64) -> GeoPoint {
    let lat = (lat + rng.gen_range(-spread..=spread)).clamp(-90.0, 90.0);
    let mut lng = lng + rng.gen_range(-spread..=spread) * 3.0;
    if lng > 180.0 {
        lng -= 360.0;
    }
    if lng < -180.0 {
        lng += 360.0;
    }
    GeoPoint::parse(lat, lng).unwrap()
}

fn hotspot(rng: &mut impl Rng) -> GeoPoint {
    let (lng, lat) = (rng.gen_range(-180.0..180.0), rng.gen_range(-60.0..60.0));
    match rng.gen_range(0..4) {
        0 => near(rng, 89.95, lng, 0.05),
        1 => near(rng, -89.95, lng, 0.05),
        2 => near(rng, lat, 179.99, 0.05),
        _ => near(rng, 52.37, 4.89, 0.2), // a dense city
    }
}

/// Ids in order, leaving out hits within a micrometre of the radius (both sides may round).
fn ids(hits: &[Near], radius: f64) -> Vec<String> {
    hits.iter()
        .filter(|h| (h.distance_km - radius).abs() > 1e-9)
        .map(|h| h.charity_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtree_and_postgis_agree_with_brute_force() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261204);
    let points: Vec<CharityPoint> = (0..10_000)
        .map(|i| {
            let location = if i % 3 == 0 {
                hotspot(&mut rng)
            } else {
                random_point(&mut rng)
            };
            let accepts: Vec<FoodType> = FoodType::ALL
                .into_iter()
                .filter(|_| rng.gen_bool(0.5))
                .collect();
            CharityPoint::new(format!("c{i:05}"), location, &accepts, 100.0)
        })
        .collect();
    let index = GeoIndex::bulk(points.clone());

    let db = TestDb::create(Backend::Postgres).await;
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .connect(&db.url)
        .await
        .unwrap();
    let postgis = enable_postgis(&pool).await;
    assert!(postgis, "PostGIS must be installed for this test (scripts/services.sh installs postgresql-15-postgis-3)");
    for chunk in points.chunks(500) {
        let mut sql =
            String::from("INSERT INTO charity_geo (charity_id, location, accepts) VALUES ");
        let values: Vec<String> = chunk
            .iter()
            .map(|p| {
                let accepts: Vec<&str> = FoodType::ALL
                    .iter()
                    .filter(|f| p.accepts(**f))
                    .map(|f| f.as_str())
                    .collect();
                format!(
                    "('{}', ST_SetSRID(ST_MakePoint({}, {}), 4326)::geography, ',{},')",
                    p.charity_id,
                    p.location.lng,
                    p.location.lat,
                    accepts.join(",")
                )
            })
            .collect();
        sql.push_str(&values.join(", "));
        sqlx::query(&sql).execute(&pool).await.unwrap();
    }

    let mut total_hits = 0;
    for q in 0..500 {
        let center = if q % 4 == 0 {
            hotspot(&mut rng)
        } else {
            random_point(&mut rng)
        };
        let radius = if q % 5 == 0 {
            rng.gen_range(50.0..800.0)
        } else {
            rng.gen_range(1.0..30.0)
        };
        let food = (q % 2 == 0).then(|| FoodType::ALL[rng.gen_range(0..7)]);
        let expected = brute_force(&points, center, radius, food);
        let from_tree = index.near(center, radius, food);
        assert_eq!(
            ids(&from_tree, radius),
            ids(&expected, radius),
            "R-tree, query {q} at {center:?} r={radius}"
        );
        for (a, b) in from_tree.iter().zip(&expected) {
            assert!((a.distance_km - b.distance_km).abs() < 1e-9);
        }
        let from_postgis = near_postgis(&pool, center.lat, center.lng, radius, food)
            .await
            .unwrap();
        assert_eq!(
            ids(&from_postgis, radius),
            ids(&expected, radius),
            "PostGIS, query {q} at {center:?} r={radius}"
        );
        for (a, b) in from_postgis.iter().zip(&expected) {
            assert!(
                (a.distance_km - b.distance_km).abs() < 1e-4,
                "{a:?} vs {b:?}"
            );
        }
        total_hits += expected.len();
    }
    assert!(
        total_hits > 1_000,
        "the queries must actually find charities ({total_hits})"
    );
}
