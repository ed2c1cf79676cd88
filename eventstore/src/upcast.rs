//! Upcaster registry: old payload versions become current ones on every read path
//! (aggregate loads and the global log), so consumers only know current shapes.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Upcasters {
    chain: Arc<Vec<Box<dyn EventUpcaster>>>,
}

impl Upcasters {
    pub fn new(chain: Vec<Box<dyn EventUpcaster>>) -> Self {
        Self {
            chain: Arc::new(chain),
        }
    }

    /// Applies every upcaster that accepts the event, in registration order.
    pub fn upcast(&self, event: SerializedEvent) -> SerializedEvent {
        self.chain.iter().fold(event, |event, upcaster| {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                upcaster.upcast(event)
            } else {
                event
            }
        })
    }
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upcasters({})", self.chain.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// v1 `Renamed { old }` becomes v2 `Renamed { new }`.
    struct RenameField;

    impl EventUpcaster for RenameField {
        fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
            event_type == "Renamed" && event_version == "1"
        }

        fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
            let old = event.payload["Renamed"]["old"].take();
            event.payload = json!({ "Renamed": { "new": old } });
            event.event_version = "2".into();
            event
        }
    }

    fn event(version: &str, payload: serde_json::Value) -> SerializedEvent {
        SerializedEvent::new(
            "a".into(),
            1,
            "T".into(),
            "Renamed".into(),
            version.into(),
            payload,
            json!({}),
        )
    }

    #[test]
    fn upcasts_old_versions_only() {
        let registry = Upcasters::new(vec![Box::new(RenameField)]);
        let v1 = registry.upcast(event("1", json!({ "Renamed": { "old": 7 } })));
        assert_eq!(
            (v1.event_version.as_str(), v1.payload),
            ("2", json!({ "Renamed": { "new": 7 } }))
        );
        let v2 = registry.upcast(event("2", json!({ "Renamed": { "new": 8 } })));
        assert_eq!(v2.payload, json!({ "Renamed": { "new": 8 } }));
    }
}
