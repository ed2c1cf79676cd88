//! Patient monitoring end to end: authorization, audit, encryption, erasure, alerts.

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use std::time::Duration as StdDuration;
use triad_domain::Role;
use triad_eventstore::store::LogFilter;
use triad_tests::gql::Reply;
use triad_tests::ws::{self, Frame};
use triad_tests::{eventually, start_server, token, Backend, Client, TestDb};

const ENROLL: &str =
    "mutation($input: EnrollPatientInput!) { enrollPatient(input: $input) { id name careTeam } }";
const RECORD: &str =
    "mutation($input: RecordVitalsInput!) { recordVitals(input: $input) { recorded } }";
const RULE: &str = "mutation($input: DefineAlertRuleInput!) { defineAlertRule(input: $input) { ruleId forDuration } }";
const PATIENT: &str = "query($id: ID!) { patient(id: $id) { id name dateOfBirth } }";
const ALERTS_SUB: &str = "subscription($id: ID!) { alertRaised(patientId: $id) { alertId patientId ruleId kind value raisedAt } }";

struct World {
    _db: TestDb,
    server: std::sync::Arc<triad_api::Server>,
    anon: Client,
    admin: Client,
    doctor: Client,
    patient_id: String,
}

impl World {
    async fn new(backend: Backend) -> World {
        let db = TestDb::create(backend).await;
        let server = start_server(&db).await;
        let anon = Client::new(server.addr, None);
        let admin = anon.with_token(Some(token("admin-1", Role::Admin)));
        let doctor = anon.with_token(Some(token("doc-1", Role::Doctor)));
        let r = admin.query(ENROLL, json!({ "input": { "name": "Zebulon Quixote", "dateOfBirth": "1971-07-13", "careTeam": ["doc-1"] } })).await;
        let patient_id = r.ok()["enrollPatient"]["id"].as_str().unwrap().to_string();
        World {
            _db: db,
            server,
            anon,
            admin,
            doctor,
            patient_id,
        }
    }

    fn as_(&self, sub: &str, role: Role) -> Client {
        self.anon.with_token(Some(token(sub, role)))
    }

    fn me(&self) -> Client {
        self.as_(&self.patient_id, Role::Patient)
    }

    async fn record(&self, who: &Client, readings: Value) -> Reply {
        who.query(
            RECORD,
            json!({ "input": { "patientId": self.patient_id, "readings": readings } }),
        )
        .await
    }

    async fn access_records(&self) -> Vec<triad_eventstore::audit::StoredAccess> {
        self.server
            .store
            .access_log()
            .list(Some(&self.patient_id), 0, 10_000)
            .await
            .unwrap()
    }
}

fn at(days_ago: i64) -> String {
    (Utc::now() - Duration::days(days_ago)).to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_with_one_access_record_per_read() {
    let w = World::new(Backend::Postgres).await;
    let other_doctor = w.as_("doc-2", Role::Doctor);
    let other_patient = w.as_("someone-else", Role::Patient);
    let dealer = w.as_("dealer-1", Role::Dealer);
    let reading = json!([{ "kind": "HEART_RATE", "value": 70, "at": at(0) }]);
    let id = json!({ "id": w.patient_id });

    // Reads: (who, allowed?)
    let me = w.me();
    let readers: Vec<(&str, &Client, bool)> = vec![
        ("admin", &w.admin, true),
        ("care-team doctor", &w.doctor, true),
        ("the patient", &me, true),
        ("another doctor", &other_doctor, false),
        ("another patient", &other_patient, false),
        ("a dealer", &dealer, false),
        ("anonymous", &w.anon, false),
    ];
    let mut expected_records = 0;
    for (who, client, allowed) in &readers {
        let r = client.query(PATIENT, id.clone()).await;
        expected_records += 1;
        if *allowed {
            assert_eq!(r.ok()["patient"]["name"], "Zebulon Quixote", "{who} reads");
        } else {
            assert_eq!(r.code(), Some("FORBIDDEN"), "{who} is refused: {}", r.body);
            assert!(r.data().is_null() || r.data()["patient"].is_null());
        }
    }

    // Writes.
    for (who, client, allowed) in [
        ("patient", w.me(), true),
        ("care-team doctor", w.doctor.clone(), true),
        ("admin", w.admin.clone(), true),
        ("another doctor", other_doctor.clone(), false),
        ("another patient", other_patient.clone(), false),
        ("dealer", dealer.clone(), false),
        ("anonymous", w.anon.clone(), false),
    ] {
        let r = w.record(&client, reading.clone()).await;
        assert_eq!(
            r.code().is_none(),
            allowed,
            "{who} recordVitals: {}",
            r.body
        );
        if !allowed {
            assert_eq!(r.code(), Some("FORBIDDEN"));
        }
    }
    let rule = json!({ "input": { "patientId": w.patient_id, "kind": "PAIN", "comparator": "GT", "threshold": 8, "forDuration": "P3D" } });
    for (who, client, allowed) in [
        ("care-team doctor", w.doctor.clone(), true),
        ("admin", w.admin.clone(), true),
        ("the patient", w.me(), false),
        ("another doctor", other_doctor.clone(), false),
    ] {
        let r = client.query(RULE, rule.clone()).await;
        assert_eq!(
            r.code().is_none(),
            allowed,
            "{who} defineAlertRule: {}",
            r.body
        );
    }
    for (who, client) in [
        ("doctor", &w.doctor),
        ("patient", &w.me()),
        ("anonymous", &w.anon),
    ] {
        let r = client
            .query(
                ENROLL,
                json!({ "input": { "name": "X", "dateOfBirth": "1990-01-01", "careTeam": [] } }),
            )
            .await;
        assert_eq!(r.code(), Some("FORBIDDEN"), "{who} enrollPatient");
        let r = client
            .query(
                "mutation($id: ID!) { forgetPatient(patientId: $id) }",
                id.clone(),
            )
            .await;
        assert_eq!(r.code(), Some("FORBIDDEN"), "{who} forgetPatient");
        let r = client
            .query(
                "query($id: ID!) { auditLog(subjectId: $id) { edges { node { seq } } } }",
                id.clone(),
            )
            .await;
        assert_eq!(r.code(), Some("FORBIDDEN"), "{who} auditLog");
    }

    // Subscriptions: checked at connect.
    for (who, tok, allowed) in [
        ("care-team doctor", Some(token("doc-1", Role::Doctor)), true),
        ("another doctor", Some(token("doc-2", Role::Doctor)), false),
        ("anonymous", None, false),
    ] {
        let mut sub = ws::subscribe(w.server.addr, tok.as_deref(), ALERTS_SUB, id.clone())
            .await
            .unwrap();
        expected_records += 1;
        let first = sub
            .next(StdDuration::from_millis(if allowed { 400 } else { 10_000 }))
            .await;
        match (allowed, first) {
            (true, None) => {}
            (false, Some(Frame::Next(v))) => {
                assert_eq!(v["errors"][0]["extensions"]["code"], "FORBIDDEN", "{who}")
            }
            (_, other) => panic!("{who}: unexpected {other:?}"),
        }
    }

    // Exactly one record per read above, each with its outcome; the chain verifies.
    let records = eventually(5, "access records", || async {
        let r = w.access_records().await;
        (r.len() >= expected_records).then_some(r)
    })
    .await;
    assert_eq!(
        records.len(),
        expected_records,
        "one access record per read: {records:#?}"
    );
    let denied = records
        .iter()
        .filter(|r| r.record.outcome == "denied")
        .count();
    assert_eq!(denied, 4 + 2);
    assert!(records.iter().any(|r| r.record.actor_sub == "doc-2"
        && r.record.outcome == "denied"
        && r.record.fields == ["dateOfBirth", "id", "name"]));
    assert!(records.iter().all(|r| !r.record.request_id.is_empty()));
    assert_eq!(
        w.server.store.access_log().verify().await.unwrap(),
        Ok(records.len() as i64)
    );

    // `triad audit --reads` lists them and checks the chain.
    let mut out = Vec::new();
    let intact = triad_api::tools::audit_reads(
        &w.server.store,
        &w.patient_id,
        triad_api::tools::Format::Table,
        &mut out,
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(intact, "{text}");
    assert!(
        text.contains(&format!(
            "{expected_records} record(s) about {}",
            w.patient_id
        )),
        "{text}"
    );
    assert!(text.contains("doctor:doc-2") && text.contains("denied"));

    // Admins see the same records through GraphQL.
    let r = w.admin.query("query($id: ID!) { auditLog(subjectId: $id, first: 500) { edges { node { seq actorId outcome operation } } } }", id.clone()).await;
    assert_eq!(
        r.ok()["auditLog"]["edges"].as_array().unwrap().len(),
        expected_records
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_health_data_in_the_event_store_and_erasure_shreds_it() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let w = World::new(backend).await;
        let r = w.record(&w.me(), json!([{ "kind": "HEART_RATE", "value": 123.456, "at": at(0) }, { "kind": "GLUCOSE", "value": 987.654, "at": at(0) }])).await;
        assert_eq!(r.ok()["recordVitals"]["recorded"], 2);
        let raw = raw_store_text(&w).await;
        for secret in ["Zebulon", "Quixote", "1971-07-13", "123.456", "987.654"] {
            assert!(
                !raw.contains(secret),
                "{secret} found in the raw event store ({backend:?})"
            );
        }
        // The care team still reads it, decrypted.
        let r = w.doctor.query("query($id: ID!) { patient(id: $id) { name vitals(kind: HEART_RATE, bucket: RAW) { min } } }", json!({ "id": w.patient_id })).await;
        let p = eventually(5, "vitals projected", || {
            let doctor = w.doctor.clone();
            let id = w.patient_id.clone();
            async move {
                let r = doctor.query("query($id: ID!) { patient(id: $id) { name vitals(kind: HEART_RATE, bucket: RAW) { min } } }", json!({ "id": id })).await;
                let p = r.ok()["patient"].clone();
                (!p["vitals"].as_array().unwrap().is_empty()).then_some(p)
            }
        })
        .await;
        assert!(r.body.get("errors").is_none());
        assert_eq!(p["name"], "Zebulon Quixote");
        assert_eq!(p["vitals"][0]["min"], 123.456);

        // Erasure.
        let r = w
            .admin
            .query(
                "mutation($id: ID!) { forgetPatient(patientId: $id) }",
                json!({ "id": w.patient_id }),
            )
            .await;
        assert_eq!(r.ok()["forgetPatient"], true);
        let r = w
            .admin
            .query(
                "mutation($id: ID!) { forgetPatient(patientId: $id) }",
                json!({ "id": w.patient_id }),
            )
            .await;
        assert_eq!(
            r.ok()["forgetPatient"],
            true,
            "repeating erasure is harmless"
        );
        triad_tests::settled(&w.server.store).await;
        let events = w
            .server
            .store
            .read(
                1,
                1_000,
                &LogFilter {
                    aggregate_type: Some("Patient".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let enrolled = events
            .iter()
            .find(|e| e.event_type == "PatientEnrolled")
            .unwrap();
        assert!(enrolled.shredded, "the events stay, unreadable");
        assert!(enrolled.payload["PatientEnrolled"]["name"].is_null());
        let vitals = w
            .server
            .store
            .read(
                1,
                1_000,
                &LogFilter {
                    aggregate_type: Some("PatientVitals".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(vitals
            .iter()
            .all(|e| e.shredded && e.payload["VitalsRecorded"]["readings"][0]["value"].is_null()));
        // Read models purge the patient.
        eventually(5, "read models purged", || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM vitals WHERE patient_id = $1")
                .bind(&w.patient_id)
                .fetch_one(w.server.store.read_pool())
                .await
                .unwrap();
            let m: i64 =
                sqlx::query_scalar("SELECT count(*) FROM patient_view WHERE patient_id = $1")
                    .bind(&w.patient_id)
                    .fetch_one(w.server.store.read_pool())
                    .await
                    .unwrap();
            (n == 0 && m == 0).then_some(())
        })
        .await;
        let r = w.admin.query(PATIENT, json!({ "id": w.patient_id })).await;
        assert_eq!(r.code(), Some("NOT_FOUND"));
        let r = w
            .record(
                &w.admin,
                json!([{ "kind": "HEART_RATE", "value": 70, "at": at(0) }]),
            )
            .await;
        assert_eq!(
            r.code(),
            Some("GONE"),
            "nothing more is stored for an erased patient"
        );
    }
}

/// Everything the event store holds, as text (payloads and wrapped keys).
async fn raw_store_text(w: &World) -> String {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(payload AS TEXT) || ' ' || CAST(metadata AS TEXT) FROM events",
    )
    .fetch_all(w.server.store.read_pool())
    .await
    .unwrap();
    rows.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_readings_are_rejected_and_nothing_is_stored() {
    let w = World::new(Backend::Sqlite).await;
    let cases = [
        (
            json!([{ "kind": "SPO2", "value": 120, "at": at(0) }]),
            "reading 0",
        ),
        (
            json!([{ "kind": "HEART_RATE", "value": 70, "at": at(0) }, { "kind": "PAIN", "value": -1, "at": at(0) }]),
            "reading 1",
        ),
        (
            json!([{ "kind": "TEMPERATURE", "value": 37, "at": (Utc::now() + Duration::minutes(30)).to_rfc3339() }]),
            "future",
        ),
        (json!([{ "kind": "MOOD", "value": 5, "at": at(0) }]), "MOOD"),
        (
            json!([{ "kind": "PAIN", "value": "high", "at": at(0) }]),
            "",
        ),
        (
            json!([{ "kind": "PAIN", "value": 5, "at": "yesterday" }]),
            "",
        ),
        (json!([]), "1 to"),
    ];
    for (readings, mention) in cases {
        let r = w.record(&w.me(), readings.clone()).await;
        assert_eq!(r.code(), Some("INVALID_INPUT"), "{readings}: {}", r.body);
        let message = r.body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(mention), "{message} should name {mention}");
    }
    let r = w.admin.query(RULE, json!({ "input": { "patientId": w.patient_id, "kind": "PAIN", "comparator": "GT", "threshold": 8, "forDuration": "3 days" } })).await;
    assert_eq!(r.code(), Some("INVALID_INPUT"));
    triad_tests::settled(&w.server.store).await;
    let stored = w
        .server
        .store
        .read(
            1,
            1_000,
            &LogFilter {
                aggregate_type: Some("PatientVitals".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(stored.is_empty(), "refused readings append nothing");
    // Repeats of a stored reading are ignored.
    let one = json!([{ "kind": "PAIN", "value": 4, "at": at(0) }]);
    assert_eq!(
        w.record(&w.me(), one.clone()).await.ok()["recordVitals"]["recorded"],
        1
    );
    assert_eq!(
        w.record(&w.me(), one).await.ok()["recordVitals"]["recorded"],
        0
    );
}

/// PAIN > 8 for 3 days: fires once when the third day is in (with out-of-order input and a
/// gap), resolves, fires again on a new episode; pushed to the care team's doctor only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pain_rule_fires_once_per_episode_and_reaches_only_the_care_team() {
    let w = World::new(Backend::Postgres).await;
    let rule = w.doctor.query(RULE, json!({ "input": { "patientId": w.patient_id, "kind": "PAIN", "comparator": "GT", "threshold": 8, "forDuration": "P3D" } })).await;
    let rule_id = rule.ok()["defineAlertRule"]["ruleId"]
        .as_str()
        .unwrap()
        .to_string();
    let id = json!({ "id": w.patient_id });
    let mut care = ws::subscribe(
        w.server.addr,
        Some(&token("doc-1", Role::Doctor)),
        ALERTS_SUB,
        id.clone(),
    )
    .await
    .unwrap();
    let mut stranger = ws::subscribe(
        w.server.addr,
        Some(&token("doc-2", Role::Doctor)),
        ALERTS_SUB,
        id.clone(),
    )
    .await
    .unwrap();
    match stranger.next(StdDuration::from_secs(10)).await {
        Some(Frame::Next(v)) => assert_eq!(v["errors"][0]["extensions"]["code"], "FORBIDDEN"),
        other => panic!("another doctor must be refused, got {other:?}"),
    }
    let pain = |days_ago: i64, v: f64| json!([{ "kind": "PAIN", "value": v, "at": at(days_ago) }]);
    let raised = |w: &World| {
        let store = w.server.store.clone();
        async move {
            let alerts = store
                .read(
                    1,
                    1_000,
                    &LogFilter {
                        aggregate_type: Some("PatientAlerts".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let raised = alerts
                .iter()
                .filter(|e| e.event_type == "AlertRaised")
                .count();
            let resolved = alerts
                .iter()
                .filter(|e| e.event_type == "AlertResolved")
                .count();
            (raised, resolved)
        }
    };
    // Day 10 and day 8 first (a gap at day 9): no alert.
    w.record(&w.me(), pain(10, 9.0)).await.ok();
    w.record(&w.me(), pain(8, 9.5)).await.ok();
    tokio::time::sleep(StdDuration::from_millis(800)).await;
    assert_eq!(raised(&w).await, (0, 0), "not on a gap");
    // Day 9 arrives late: three consecutive days.
    w.record(&w.me(), pain(9, 8.5)).await.ok();
    let pushed = care.take(1, StdDuration::from_secs(10)).await;
    assert_eq!(pushed[0]["data"]["alertRaised"]["ruleId"], rule_id.as_str());
    assert_eq!(pushed[0]["data"]["alertRaised"]["kind"], "PAIN");
    eventually(5, "one alert", || async {
        (raised(&w).await == (1, 0)).then_some(())
    })
    .await;
    // Day 7 above 8 still: same episode, no new alert. Day 6 at 3: resolves.
    w.record(&w.me(), pain(7, 9.0)).await.ok();
    w.record(&w.me(), pain(6, 3.0)).await.ok();
    eventually(5, "resolved", || async {
        (raised(&w).await == (1, 1)).then_some(())
    })
    .await;
    // A new episode: days 5, 4, 3.
    for d in [5, 4, 3] {
        w.record(&w.me(), pain(d, 9.0)).await.ok();
    }
    eventually(5, "second episode", || async {
        (raised(&w).await == (2, 1)).then_some(())
    })
    .await;
    assert_eq!(care.take(1, StdDuration::from_secs(10)).await.len(), 1);
    assert!(
        care.next(StdDuration::from_millis(300)).await.is_none(),
        "one push per episode"
    );
    // The read model agrees.
    let r = w
        .doctor
        .query(
            "query($id: ID!) { patient(id: $id) { alerts { ruleId resolvedAt } } }",
            id,
        )
        .await;
    assert_eq!(r.ok()["patient"]["alerts"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vitals_buckets_and_the_digest() {
    let w = World::new(Backend::Postgres).await;
    let start = (Utc::now() - Duration::days(2))
        .date_naive()
        .and_hms_opt(10, 0, 0)
        .unwrap()
        .and_utc();
    let readings: Vec<Value> = (0..120).map(|m| json!({ "kind": "HEART_RATE", "value": 60 + (m % 10), "at": (start + Duration::minutes(m)).to_rfc3339() })).collect();
    assert_eq!(
        w.record(&w.me(), json!(readings)).await.ok()["recordVitals"]["recorded"],
        120
    );
    let q = "query($id: ID!, $b: VitalBucket!, $from: DateTime, $to: DateTime) { patient(id: $id) { vitals(kind: HEART_RATE, bucket: $b, from: $from, to: $to) { at min max avg count } } }";
    let vars = |b: &str| json!({ "id": w.patient_id, "b": b, "from": (start - Duration::hours(1)).to_rfc3339(), "to": (start + Duration::hours(3)).to_rfc3339() });
    let hours = eventually(5, "hourly rollups", || async {
        let r = w.doctor.query(q, vars("HOUR")).await;
        let v = r.ok()["patient"]["vitals"].clone();
        (v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["count"].as_i64().unwrap())
            .sum::<i64>()
            == 120)
            .then_some(v)
    })
    .await;
    assert_eq!(hours.as_array().unwrap().len(), 2);
    assert_eq!(
        hours[0],
        json!({ "at": start.to_rfc3339(), "min": 60.0, "max": 69.0, "avg": 64.5, "count": 60 })
    );
    assert_eq!(
        w.doctor.query(q, vars("MINUTE")).await.ok()["patient"]["vitals"]
            .as_array()
            .unwrap()
            .len(),
        120
    );
    assert_eq!(
        w.doctor.query(q, vars("RAW")).await.ok()["patient"]["vitals"]
            .as_array()
            .unwrap()
            .len(),
        120
    );
    let mut day_vars = vars("DAY");
    day_vars["from"] = json!((start - Duration::days(1)).to_rfc3339());
    let day = w.doctor.query(q, day_vars).await;
    assert_eq!(day.ok()["patient"]["vitals"][0]["count"], 120);

    let r = w.doctor.query("query($id: ID!) { patient(id: $id) { digest { text generatedBy kinds { kind count trend } openAlerts } } }", json!({ "id": w.patient_id })).await;
    let d = r.ok()["patient"]["digest"].clone();
    assert_eq!(d["generatedBy"], "builtin");
    assert!(
        d["text"]
            .as_str()
            .unwrap()
            .contains("HEART_RATE: 120 readings, avg 64.5"),
        "{d}"
    );
    assert_eq!(d["kinds"][0]["count"], 120);
}

/// The digest's language-model provider, against a local OpenAI-compatible stub (never the
/// internet); the built-in text stands in when the provider fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_provider_against_a_local_stub() {
    use axum::routing::post;
    let stub = axum::Router::new().route(
        "/v1/chat/completions",
        post(|body: axum::Json<Value>| async move {
            let asked = body.0["messages"][1]["content"].as_str().unwrap_or_default().contains("HEART_RATE");
            axum::Json(json!({ "choices": [{ "message": { "role": "assistant", "content": format!("Stub summary (facts seen: {asked}).") } }] }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stub_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, stub).await.ok() });

    let db = TestDb::create(Backend::Sqlite).await;
    let config = |url: String| triad_api::ServerConfig {
        llm: Some(triad_api::digest::LlmConfig {
            url,
            model: "test-model".into(),
            api_key: Some("k".into()),
        }),
        ..triad_tests::server_config(&db)
    };
    let server = triad_api::Server::start(config(format!("http://{stub_addr}/v1")))
        .await
        .unwrap();
    let admin = Client::new(server.addr, Some(token("admin-1", Role::Admin)));
    let id = admin
        .query(
            ENROLL,
            json!({ "input": { "name": "Ann", "dateOfBirth": "1980-01-01", "careTeam": [] } }),
        )
        .await
        .ok()["enrollPatient"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    admin.query(RECORD, json!({ "input": { "patientId": id, "readings": [{ "kind": "HEART_RATE", "value": 70, "at": at(0) }] } })).await.ok();
    let digest = "query($id: ID!) { patient(id: $id) { digest { text generatedBy } } }";
    let d = eventually(5, "digest with data", || async {
        let r = admin.query(digest, json!({ "id": id })).await;
        let d = r.ok()["patient"]["digest"].clone();
        d["text"].as_str().unwrap().contains("true").then_some(d)
    })
    .await;
    assert_eq!(
        d,
        json!({ "text": "Stub summary (facts seen: true).", "generatedBy": "llm:test-model" })
    );
    drop(server);

    // A provider that is down: the built-in summary, never an error.
    let server = triad_api::Server::start(config("http://127.0.0.1:9/v1".into()))
        .await
        .unwrap();
    let admin = Client::new(server.addr, Some(token("admin-1", Role::Admin)));
    let r = admin.query(digest, json!({ "id": id })).await;
    assert_eq!(r.ok()["patient"]["digest"]["generatedBy"], "builtin");
}
