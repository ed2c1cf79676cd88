//! Section `geo`: charities near a point — the in-memory R-tree, brute force, PostGIS, and
//! the real server building its index from the log.

use crate::extra::{copy_line, metadata, wait_sequenced, Ctx, COPY_EVENTS};
use crate::report::{histogram, Row};
use crate::server::BenchDb;
use anyhow::Context as _;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;
use std::time::{Duration, Instant};
use triad_domain::donation::FoodType;
use triad_domain::geo::GeoPoint;
use triad_projections::geo::{brute_force, CharityPoint, GeoIndex};

const PARIS: (f64, f64) = (48.8566, 2.3522);
const RADIUS_KM: f64 = 10.0;
const QUERIES: usize = 1_000;
const BRUTE_QUERIES: usize = 20;
/// The known point for (d): a small cluster far from Paris.
const PROBE: (f64, f64) = (-33.0, 151.0);
const PROBE_RADIUS_KM: f64 = 2.0;
const PROBE_CHARITIES: usize = 50;

pub struct Config {
    pub charities: usize,
    pub log_charities: usize,
}

fn uniform(rng: &mut StdRng) -> GeoPoint {
    let lat = (2.0 * rng.gen::<f64>() - 1.0).asin().to_degrees();
    let lng = rng.gen_range(-180.0..180.0);
    GeoPoint { lat, lng }
}

/// Uniform over a disc of `radius_km` around (lat, lng) (flat approximation).
fn around(rng: &mut StdRng, (lat, lng): (f64, f64), radius_km: f64) -> GeoPoint {
    let r = radius_km * rng.gen::<f64>().sqrt();
    let theta = rng.gen_range(0.0..std::f64::consts::TAU);
    let dlat = r * theta.cos() / 111.2;
    let dlng = r * theta.sin() / (111.2 * lat.to_radians().cos());
    GeoPoint {
        lat: (lat + dlat).clamp(-90.0, 90.0),
        lng: lng + dlng,
    }
}

/// 80% uniform on the sphere, 20% within 30 km of Paris.
fn points(n: usize, rng: &mut StdRng) -> Vec<CharityPoint> {
    let kinds = [
        vec![FoodType::Produce, FoodType::Bakery],
        vec![FoodType::Prepared],
        vec![FoodType::Dairy, FoodType::Meat, FoodType::Frozen],
    ];
    (0..n)
        .map(|i| {
            let loc = if i % 5 == 0 {
                around(rng, PARIS, 30.0)
            } else {
                uniform(rng)
            };
            CharityPoint::new(format!("c{i:07}"), loc, &kinds[i % kinds.len()], 100.0)
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn run(ctx: &Ctx, cfg: &Config) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut rng = StdRng::seed_from_u64(42);
    let n = cfg.charities;
    eprintln!("triad-bench: geo: generating {n} charities");
    let pts = points(n, &mut rng);
    let centres: Vec<GeoPoint> = (0..QUERIES)
        .map(|_| around(&mut rng, PARIS, 20.0))
        .collect();
    let label = crate::fanout::thousands(n);

    // (a) the in-memory index.
    let t0 = Instant::now();
    let index = GeoIndex::bulk(pts.clone());
    let build = t0.elapsed();
    let mut row = Row::new(format!("geo index bulk build ({label})"));
    row.rate = Some(n as f64 / build.as_secs_f64());
    row.max_ms = Some(ms(build));
    row.extra.insert("build_ms".into(), json!(ms(build)));
    rows.push(row);
    let mut h = histogram();
    let mut hits = 0usize;
    let t0 = Instant::now();
    for c in &centres {
        let q = Instant::now();
        hits += index.near(*c, RADIUS_KM, None).len();
        h.saturating_record(q.elapsed().as_micros() as u64);
    }
    let total = t0.elapsed();
    let mean_hits = hits as f64 / centres.len() as f64;
    let mut row = Row::new(format!("geo index near 10km ({label})"));
    row.rate = Some(centres.len() as f64 / total.as_secs_f64());
    row.set_latency(&h);
    row.extra.insert("mean_hits".into(), json!(mean_hits));
    rows.push(row);
    notes.push(format!(
        "geo ({label} charities, 20% within 30 km of Paris): bulk build {:.0} ms; index near 10 km: {mean_hits:.0} hits/query on average; ops/s = queries/s (one client)",
        ms(build)
    ));
    drop(index);

    // (b) brute force.
    let mut h = histogram();
    let mut bf_hits = 0usize;
    let t0 = Instant::now();
    for c in centres.iter().take(BRUTE_QUERIES) {
        let q = Instant::now();
        bf_hits += brute_force(&pts, *c, RADIUS_KM, None).len();
        h.saturating_record(q.elapsed().as_micros() as u64);
    }
    let mut row = Row::new(format!("geo brute force 10km ({label})"));
    row.rate = Some(BRUTE_QUERIES as f64 / t0.elapsed().as_secs_f64());
    row.set_latency(&h);
    row.extra.insert(
        "mean_hits".into(),
        json!(bf_hits as f64 / BRUTE_QUERIES as f64),
    );
    rows.push(row);

    // (c) PostGIS.
    eprintln!("triad-bench: geo: PostGIS");
    let row = postgis(ctx, &pts, &centres, &label, &mut notes)
        .await
        .unwrap_or_else(|e| Row::failed(format!("geo PostGIS 10km ({label})"), &e));
    rows.push(row);
    drop(pts);

    // (d) the server's index from the log.
    eprintln!(
        "triad-bench: geo: index from the log ({} charities)",
        cfg.log_charities
    );
    let name = format!(
        "geo index from log ({})",
        crate::fanout::thousands(cfg.log_charities)
    );
    let row = from_log(ctx, cfg.log_charities, &name)
        .await
        .unwrap_or_else(|e| Row::failed(name, &e));
    rows.push(row);
    (rows, notes)
}

async fn postgis(
    ctx: &Ctx,
    pts: &[CharityPoint],
    centres: &[GeoPoint],
    label: &str,
    notes: &mut Vec<String>,
) -> anyhow::Result<Row> {
    let db = BenchDb::create(&ctx.admin_url).await?;
    let r = postgis_on(&db, pts, centres, label, notes).await;
    if let Err(e) = db.drop_db().await {
        eprintln!("triad-bench: dropping {}: {e:#}", db.name);
    }
    r
}

async fn postgis_on(
    db: &BenchDb,
    pts: &[CharityPoint],
    centres: &[GeoPoint],
    label: &str,
    notes: &mut Vec<String>,
) -> anyhow::Result<Row> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await?;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS postgis")
        .execute(&pool)
        .await
        .context("CREATE EXTENSION postgis")?;
    sqlx::query("CREATE TABLE bench_charity_geo(charity_id text primary key, location geography(Point,4326), accepts text)")
        .execute(&pool)
        .await?;
    let t0 = Instant::now();
    {
        let mut conn = pool.acquire().await?;
        let mut copy = conn
            .copy_in_raw("COPY bench_charity_geo (charity_id, location, accepts) FROM STDIN")
            .await?;
        let mut buf = String::new();
        for p in pts {
            buf.push_str(&format!(
                "{}\tSRID=4326;POINT({} {})\tPRODUCE,BAKERY\n",
                p.charity_id, p.location.lng, p.location.lat
            ));
            if buf.len() > 1 << 20 {
                copy.send(std::mem::take(&mut buf).into_bytes()).await?;
            }
        }
        if !buf.is_empty() {
            copy.send(buf.into_bytes()).await?;
        }
        copy.finish().await?;
    }
    let copied = t0.elapsed();
    let t1 = Instant::now();
    sqlx::query("CREATE INDEX bench_charity_geo_gist ON bench_charity_geo USING GIST(location)")
        .execute(&pool)
        .await?;
    sqlx::query("ANALYZE bench_charity_geo")
        .execute(&pool)
        .await?;
    let indexed = t1.elapsed();
    notes.push(format!(
        "geo PostGIS: COPY {} rows {:.0} ms, GIST index + ANALYZE {:.0} ms",
        pts.len(),
        ms(copied),
        ms(indexed)
    ));
    const Q: &str = "SELECT charity_id, ST_Distance(location, ST_SetSRID(ST_MakePoint($1,$2),4326)::geography, false) AS d FROM bench_charity_geo WHERE ST_DWithin(location, ST_SetSRID(ST_MakePoint($1,$2),4326)::geography, 10000, false) ORDER BY d";
    let mut h = histogram();
    let mut hits = 0usize;
    let t0 = Instant::now();
    for c in centres {
        let q = Instant::now();
        let rows: Vec<(String, f64)> = sqlx::query_as(Q)
            .bind(c.lng)
            .bind(c.lat)
            .fetch_all(&pool)
            .await?;
        h.saturating_record(q.elapsed().as_micros() as u64);
        hits += rows.len();
    }
    let mut row = Row::new(format!("geo PostGIS 10km ({label})"));
    row.rate = Some(centres.len() as f64 / t0.elapsed().as_secs_f64());
    row.set_latency(&h);
    row.extra.insert(
        "mean_hits".into(),
        json!(hits as f64 / centres.len() as f64),
    );
    row.extra.insert("copy_ms".into(), json!(ms(copied)));
    row.extra.insert("index_ms".into(), json!(ms(indexed)));
    pool.close().await;
    Ok(row)
}

async fn from_log(ctx: &Ctx, n: usize, name: &str) -> anyhow::Result<Row> {
    let db = BenchDb::create(&ctx.admin_url).await?;
    let r = from_log_on(ctx, &db, n, name).await;
    if let Err(e) = db.drop_db().await {
        eprintln!("triad-bench: dropping {}: {e:#}", db.name);
    }
    r
}

async fn from_log_on(ctx: &Ctx, db: &BenchDb, n: usize, name: &str) -> anyhow::Result<Row> {
    // The first start migrates the schema and runs the sequencer while we COPY.
    let srv = ctx.start(db, "server-geo", &[]).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await?;
    let mut rng = StdRng::seed_from_u64(7);
    let at = chrono::Utc::now().to_rfc3339();
    let mut expected = 0usize;
    let probe = GeoPoint {
        lat: PROBE.0,
        lng: PROBE.1,
    };
    let t0 = Instant::now();
    {
        let mut conn = pool.acquire().await?;
        let mut copy = conn.copy_in_raw(COPY_EVENTS).await?;
        let mut buf = String::new();
        for i in 0..n {
            let loc = if i < PROBE_CHARITIES.min(n) {
                around(&mut rng, PROBE, PROBE_RADIUS_KM * 0.5)
            } else if i % 5 == 0 {
                around(&mut rng, PARIS, 30.0)
            } else {
                uniform(&mut rng)
            };
            if probe.distance_km(loc) <= PROBE_RADIUS_KM {
                expected += 1;
            }
            let id = format!("bench-charity-{i:07}");
            let payload = format!(
                r#"{{"CharityRegistered":{{"charity_id":"{id}","manager":"bench-manager","name":"Bench charity {i}","location":{{"lat":{},"lng":{}}},"capacity_kg":100.0,"accepts":["PRODUCE","BAKERY"],"registered_at":"{at}"}}}}"#,
                loc.lat, loc.lng
            );
            let meta = metadata("bench-manager", "charity", &at);
            copy_line(
                &mut buf,
                [
                    "Charity",
                    &id,
                    "1",
                    "CharityRegistered",
                    "1",
                    &payload,
                    &meta,
                ],
            );
            if buf.len() > 1 << 20 {
                copy.send(std::mem::take(&mut buf).into_bytes()).await?;
            }
        }
        if !buf.is_empty() {
            copy.send(buf.into_bytes()).await?;
        }
        copy.finish().await?;
    }
    let copied = t0.elapsed();
    wait_sequenced(&pool, Duration::from_secs(600)).await?;
    let sequenced = t0.elapsed();
    pool.close().await;
    srv.stop().await;
    let expected = expected.min(1_000);

    // Restart: time until charitiesNear sees them all.
    let gql_body = json!({
        "query": "query($lat: Float!, $lng: Float!, $r: Float!) { charitiesNear(lat: $lat, lng: $lng, radiusKm: $r) { distanceKm } }",
        "variables": { "lat": PROBE.0, "lng": PROBE.1, "r": PROBE_RADIUS_KM },
    })
    .to_string();
    let t0 = Instant::now();
    let srv = ctx.start(db, "server-geo", &[]).await?;
    let healthy = t0.elapsed();
    let http = reqwest::Client::new();
    let url = format!("http://{}/graphql", srv.addr);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = serde_json::Value::Null;
    let result = loop {
        let got = async {
            let v: serde_json::Value = http
                .post(&url)
                .header("content-type", "application/json")
                .body(gql_body.clone())
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok(v)
        }
        .await;
        if let Ok(v) = got {
            let count = v["data"]["charitiesNear"].as_array().map(Vec::len);
            if count == Some(expected) {
                break Ok(t0.elapsed());
            }
            last = v;
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "charitiesNear did not return {expected} charities within 600 s; last answer: {}",
                last.to_string().chars().take(300).collect::<String>()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    srv.stop().await;
    let took = result?;
    let mut row = Row::new(name);
    row.rate = Some(n as f64 / took.as_secs_f64());
    row.max_ms = Some(ms(took));
    row.expected = Some(expected as u64);
    row.extra.insert("events".into(), json!(n));
    row.extra.insert("copy_ms".into(), json!(ms(copied)));
    row.extra
        .insert("copy_and_sequence_ms".into(), json!(ms(sequenced)));
    row.extra
        .insert("restart_to_healthz_ms".into(), json!(ms(healthy)));
    row.extra
        .insert("restart_to_complete_ms".into(), json!(ms(took)));
    Ok(row)
}
