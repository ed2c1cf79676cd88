//! The event catalog: the JSON Schema of every event type at its current version, generated
//! from the Rust types (schemas/events/ holds them; a test keeps the two equal).

use serde_json::Value;

/// Event types whose current version is not 1.
const VERSIONS: &[(&str, &str)] = &[("AuctionOpened", "2")];

/// The current version of an event type (every `DomainEvent::event_version` reads this).
pub fn version_of(event_type: &str) -> &'static str {
    VERSIONS
        .iter()
        .find(|(t, _)| *t == event_type)
        .map_or("1", |(_, v)| v)
}

/// (aggregate type, event type, version, schema) for every event type.
pub fn schemas() -> Vec<(&'static str, String, &'static str, Value)> {
    let mut out = vec![];
    let mut add = |aggregate: &'static str, root: schemars::Schema| {
        let root = root.to_value();
        let defs = root.get("$defs").cloned();
        for variant in root
            .get("oneOf")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let Some(name) = variant
                .get("required")
                .and_then(|r| r.get(0))
                .and_then(Value::as_str)
                .map(str::to_string)
            else {
                continue;
            };
            let mut schema = serde_json::json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "title": format!("{aggregate}.{name}"),
                "x-event-version": version_of(&name),
            });
            if let (Some(obj), Some(v)) = (schema.as_object_mut(), variant.as_object()) {
                for (k, val) in v {
                    obj.insert(k.clone(), val.clone());
                }
                if let Some(defs) = &defs {
                    obj.insert("$defs".into(), defs.clone());
                }
            }
            out.push((aggregate, name.clone(), version_of(&name), schema));
        }
    };
    add(
        "Auction",
        schemars::schema_for!(crate::auction::AuctionEvent),
    );
    add(
        "Patient",
        schemars::schema_for!(crate::patient::PatientEvent),
    );
    add(
        "PatientVitals",
        schemars::schema_for!(crate::patient::VitalsEvent),
    );
    add(
        "PatientAlerts",
        schemars::schema_for!(crate::patient::AlertEvent),
    );
    add(
        "Charity",
        schemars::schema_for!(crate::donation::CharityEvent),
    );
    add(
        "Donation",
        schemars::schema_for!(crate::donation::DonationEvent),
    );
    out
}
