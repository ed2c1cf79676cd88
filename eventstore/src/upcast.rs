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
