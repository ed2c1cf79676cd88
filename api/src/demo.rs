//! A small demo data set for `triad serve --demo`: a few open auctions with bids, a doctor
//! with two patients (vitals, rules, alerts), charities and donations around Paris; loaded
//! through the same commands as real traffic, each part only where it is missing. Then the
//! console's sign-in may hand out tokens for the demo's people (`GET /demo/tokens`).

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use std::time::Duration as StdDuration;
use triad_api::auth::Auth;
use triad_api::web::DemoIdentity;
use triad_api::Server;
use triad_domain::auction::AuctionCommand;
use triad_domain::{Actor, AuctionId, Cents, Role, UserId};
use triad_eventstore::CommandContext;

pub async fn load(server: &Server, auth: &Auth) -> anyhow::Result<()> {
    let seller = Actor {
        sub: UserId::parse("demo-seller")?,
        role: Role::Seller,
    };
    let dealers = ["demo-dealer-1", "demo-dealer-2", "demo-dealer-3"];
    if server.store.head().await? == 0 {
        let cars = [
            ("2019 Toyota Corolla, 48k km", 800_000, 1_100_000),
            ("2016 BMW 320d Touring", 1_200_000, 1_600_000),
            ("2021 Tesla Model 3 LR", 2_500_000, 3_100_000),
        ];
        for (i, (title, start, reserve)) in cars.into_iter().enumerate() {
            let id = AuctionId::parse(format!("demo-auction-{}", i + 1))?;
            let now = Utc::now();
            let open = AuctionCommand::Open {
                auction_id: id.clone(),
                seller: seller.sub.clone(),
                title: title.to_string(),
                starting_price: Cents::parse("start", start)?,
                min_increment: Cents::parse("inc", 10_000)?,
                reserve_price: Cents::parse("reserve", reserve)?,
                ends_at: now + Duration::hours(24 * (i as i64 + 1)),
                now,
            };
            server
                .auctions
                .execute(
                    id.as_str(),
                    open,
                    CommandContext::new(seller.clone(), "demo"),
                )
                .await?;
            for (n, dealer) in dealers.iter().enumerate() {
                let bidder = Actor {
                    sub: UserId::parse(*dealer)?,
                    role: Role::Dealer,
                };
                let bid = AuctionCommand::PlaceBid {
                    bidder: bidder.sub.clone(),
                    amount: Cents::parse("amount", start + 10_000 * n as i64)?,
                    client_bid_id: None,
                    now: Utc::now(),
                };
                server
                    .auctions
                    .execute(id.as_str(), bid, CommandContext::new(bidder, "demo"))
                    .await?;
            }
        }
        eprintln!("triad: demo data loaded (3 auctions: demo-auction-1..3)");
    }
    let gql = Gql::new(server, auth);
    let patients = load_patients(&gql).await?;
    load_donations(&gql).await?;

    let day = StdDuration::from_secs(86_400);
    for (sub, role) in [
        ("demo-seller", Role::Seller),
        ("demo-dealer-1", Role::Dealer),
        ("demo-admin", Role::Admin),
    ] {
        eprintln!(
            "triad: dev token {sub} ({}): {}",
            role.as_str(),
            auth.mint(&UserId::parse(sub)?, role, day)?
        );
    }
    let mut identities = vec![];
    for (sub, role, label) in [
        ("demo-dealer-1", Role::Dealer, "Dealer 1: bids on cars"),
        ("demo-dealer-2", Role::Dealer, "Dealer 2: bids on cars"),
        (
            "demo-seller",
            Role::Seller,
            "Seller: owns the demo auctions",
        ),
        ("demo-doctor", Role::Doctor, "Dr. Demo: two patients"),
        (
            "demo-charity",
            Role::Charity,
            "Charity manager: three food banks",
        ),
        ("demo-donor", Role::Donor, "Donor: a bakery"),
        ("demo-admin", Role::Admin, "Admin: audit log and history"),
    ] {
        identities.push(DemoIdentity {
            sub: UserId::parse(sub)?,
            role,
            label: label.to_string(),
        });
    }
    if let Some((id, name)) = patients.first() {
        identities.push(DemoIdentity {
            sub: UserId::parse(id.as_str())?,
            role: Role::Patient,
            label: format!("Patient {name}"),
        });
    }
    server.enable_demo(identities);
    Ok(())
}

/// GraphQL over HTTP to this very server, so demo data takes the path real traffic takes
/// (authorization, encryption, access records).
struct Gql<'a> {
    http: reqwest::Client,
    url: String,
    auth: &'a Auth,
}

impl<'a> Gql<'a> {
    fn new(server: &Server, auth: &'a Auth) -> Gql<'a> {
        let mut addr = server.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Gql {
            http: reqwest::Client::new(),
            url: format!("http://{addr}/graphql"),
            auth,
        }
    }

    async fn call(
        &self,
        sub: &str,
        role: Role,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<Value> {
        let token = self
            .auth
            .mint(&UserId::parse(sub)?, role, StdDuration::from_secs(600))?;
        let body: Value = self
            .http
            .post(&self.url)
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        if let Some(errors) = body.get("errors") {
            anyhow::bail!("demo data: {errors}");
        }
        Ok(body["data"].clone())
    }
}

/// Dr. Demo's patients: two days of vitals every 20 minutes, alert rules, and episodes that
/// raise alerts (a short SpO2 dip for Ada, three days of high pain for Alan).
async fn load_patients(gql: &Gql<'_>) -> anyhow::Result<Vec<(String, String)>> {
    const DOCTOR: &str = "demo-doctor";
    let mine = gql
        .call(
            DOCTOR,
            Role::Doctor,
            "{ patients(first: 10) { nodes { id name } } }",
            json!({}),
        )
        .await?;
    let existing: Vec<(String, String)> = mine["patients"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["id"].as_str()?.to_string(),
                p["name"].as_str()?.to_string(),
            ))
        })
        .collect();
    if !existing.is_empty() {
        return Ok(existing);
    }
    let now = Utc::now();
    let mut out = vec![];
    for (n, (name, born)) in [
        ("Ada Lovelace", "1980-02-01"),
        ("Alan Turing", "1975-06-23"),
    ]
    .into_iter()
    .enumerate()
    {
        let enrolled = gql
            .call(
                "demo-admin",
                Role::Admin,
                "mutation($input: EnrollPatientInput!) { enrollPatient(input: $input) { id } }",
                json!({ "input": { "name": name, "dateOfBirth": born, "careTeam": [DOCTOR] } }),
            )
            .await?;
        let id = enrolled["enrollPatient"]["id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("enrollPatient answered no id"))?
            .to_string();
        for (kind, comparator, threshold, duration) in [
            ("SPO2", "LT", 90.0, "PT10M"),
            ("HEART_RATE", "GT", 130.0, "PT10M"),
            ("PAIN", "GT", 8.0, "P3D"),
        ] {
            gql.call(
                DOCTOR,
                Role::Doctor,
                "mutation($input: DefineAlertRuleInput!) { defineAlertRule(input: $input) { ruleId } }",
                json!({ "input": { "patientId": id, "kind": kind, "comparator": comparator, "threshold": threshold, "forDuration": duration } }),
            )
            .await?;
        }
        let mut readings = vec![];
        let phase = n as f64;
        for step in 0..(48 * 3) {
            let at = now - Duration::minutes(20 * (48 * 3 - step));
            let t = step as f64 / 9.0 + phase;
            let heart = 72.0 + 9.0 * t.sin() + 4.0 * (t * 2.7).cos();
            let spo2 = 97.0 + (t * 1.3).sin();
            readings.push(
                json!({ "kind": "HEART_RATE", "value": heart.round(), "at": at.to_rfc3339() }),
            );
            readings.push(json!({ "kind": "SPO2", "value": spo2.round(), "at": at.to_rfc3339() }));
            readings.push(json!({ "kind": "TEMPERATURE", "value": ((36.7 + 0.3 * (t / 3.0).sin()) * 10.0).round() / 10.0, "at": at.to_rfc3339() }));
        }
        if n == 0 {
            // A quarter of an hour below 90 % SpO2, read every 2 minutes: the PT10M rule fires.
            for k in 0..8 {
                let at = now - Duration::hours(6) + Duration::minutes(2 * k + 1);
                readings.push(json!({ "kind": "SPO2", "value": 86.0, "at": at.to_rfc3339() }));
            }
        }
        for day in 0..4 {
            let pain = if n == 1 && day < 3 {
                9.0
            } else {
                4.0 + day as f64
            };
            let at = now - Duration::days(day) - Duration::minutes(30);
            readings.push(json!({ "kind": "PAIN", "value": pain, "at": at.to_rfc3339() }));
        }
        // Rules are judged at the latest reading of each batch, as a device sends them: two
        // batches, the first ending in Ada's dip, so her alert is raised (and then resolved).
        let dip_end = now - Duration::hours(6) + Duration::minutes(16);
        let (earlier, later): (Vec<Value>, Vec<Value>) = readings.into_iter().partition(|r| {
            r["at"]
                .as_str()
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                .is_some_and(|at| at <= dip_end)
        });
        for batch in [earlier, later] {
            gql.call(
                &id,
                Role::Patient,
                "mutation($input: RecordVitalsInput!) { recordVitals(input: $input) { recorded } }",
                json!({ "input": { "patientId": id, "readings": batch } }),
            )
            .await?;
        }
        out.push((id, name.to_string()));
    }
    eprintln!("triad: demo patients loaded (Dr. Demo: Ada Lovelace, Alan Turing)");
    Ok(out)
}

/// Food banks around the Paris demo point, managed by demo-charity, and a few donations.
async fn load_donations(gql: &Gql<'_>) -> anyhow::Result<()> {
    const NEAR: &str =
        "query { charitiesNear(lat: 48.8566, lng: 2.3522, radiusKm: 15) { charity { id } } }";
    let near = gql
        .call("demo-charity", Role::Charity, NEAR, json!({}))
        .await?;
    if near["charitiesNear"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        return Ok(());
    }
    for (name, lat, lng, capacity, accepts) in [
        (
            "Restos du Marais",
            48.8590,
            2.3620,
            400.0,
            json!(["BAKERY", "PRODUCE", "PREPARED"]),
        ),
        (
            "Banque Alimentaire Nord",
            48.8920,
            2.3480,
            900.0,
            json!(["PANTRY", "PRODUCE", "DAIRY", "BAKERY"]),
        ),
        (
            "Soupe Populaire Sud",
            48.8300,
            2.3560,
            250.0,
            json!(["PREPARED", "BAKERY"]),
        ),
    ] {
        gql.call(
            "demo-charity",
            Role::Charity,
            "mutation($input: RegisterCharityInput!) { registerCharity(input: $input) { id } }",
            json!({ "input": { "name": name, "location": { "lat": lat, "lng": lng }, "capacityKg": capacity, "accepts": accepts } }),
        )
        .await?;
    }
    let pickup_by = (Utc::now() + Duration::hours(20)).to_rfc3339();
    for (food, kg, lat, lng) in [
        ("BAKERY", 12.0, 48.8606, 2.3376),
        ("PRODUCE", 40.0, 48.8530, 2.3690),
        ("PREPARED", 8.0, 48.8400, 2.3500),
    ] {
        gql.call(
            "demo-donor",
            Role::Donor,
            "mutation($input: PostDonationInput!) { postDonation(input: $input) { id } }",
            json!({ "input": { "foodType": food, "quantityKg": kg, "location": { "lat": lat, "lng": lng }, "pickupBy": pickup_by } }),
        )
        .await?;
    }
    eprintln!("triad: demo charities and donations loaded (around 48.8566, 2.3522)");
    Ok(())
}
