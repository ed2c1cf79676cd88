//! Upcasters: old stored payload versions into current ones, applied on every read path.
//! Each is a pure function of the stored JSON.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};

/// `AuctionOpened` v1 had no `has_reserve`; v2 derives it from the reserve price.
pub struct AuctionOpenedV1ToV2;

impl EventUpcaster for AuctionOpenedV1ToV2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "AuctionOpened" && event_version == "1"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(body) = event
            .payload
            .get_mut("AuctionOpened")
            .and_then(|b| b.as_object_mut())
        {
            let reserve = body
                .get("reserve_price")
                .and_then(|r| r.as_i64())
                .unwrap_or(0);
            body.insert("has_reserve".into(), serde_json::Value::Bool(reserve > 0));
        }
        event.event_version = "2".into();
        event
    }
}

/// Every upcaster, in the order they apply.
pub fn all() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(AuctionOpenedV1ToV2)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auction::AuctionEvent;
    use serde_json::json;

    #[test]
    fn auction_opened_v1_reads_as_v2() {
        let v1 = json!({ "AuctionOpened": { "auction_id": "a", "seller": "s", "title": "t", "starting_price": 100, "min_increment": 10, "reserve_price": 500, "ends_at": "2030-01-01T00:00:00Z", "opened_at": "2029-01-01T00:00:00Z" } });
        let e = AuctionOpenedV1ToV2.upcast(SerializedEvent::new(
            "a".into(),
            1,
            "Auction".into(),
            "AuctionOpened".into(),
            "1".into(),
            v1,
            json!({}),
        ));
        assert_eq!(e.event_version, "2");
        let AuctionEvent::AuctionOpened { has_reserve, .. } =
            serde_json::from_value(e.payload).unwrap()
        else {
            panic!()
        };
        assert!(has_reserve);
    }
}
