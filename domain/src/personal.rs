//! Personal data in events: a value that may have been crypto-shredded.
//!
//! The event store encrypts the fields a domain declares personal ([`ProtectedFields`]) with
//! a per-subject key. When that key is destroyed (erasure), the stored events stay but those
//! fields read back as `null`, which deserializes to [`Personal::Shredded`]; everything else
//! in the event still works (a forgotten patient's aggregate still loads).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq)]
pub enum Personal<T> {
    Known(T),
    Shredded,
}

impl<T> Personal<T> {
    pub fn known(&self) -> Option<&T> {
        match self {
            Personal::Known(v) => Some(v),
            Personal::Shredded => None,
        }
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Personal::Known(v) => v.serialize(s),
            Personal::Shredded => s.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            Some(v) => Personal::Known(v),
            None => Personal::Shredded,
        })
    }
}

/// Which fields of which events of an aggregate type are personal, and whose they are.
#[derive(Debug, Clone, Copy)]
pub struct ProtectedFields {
    pub aggregate_type: &'static str,
    /// The data subject (whose key encrypts the fields) of an aggregate id.
    pub subject: fn(&str) -> &str,
    /// Per event type, JSON pointers into the payload; `*` matches every array element.
    pub fields: &'static [(&'static str, &'static [&'static str])],
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Personal<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Personal_{}", T::schema_name()).into()
    }

    /// Personal data reads as its value, or `null` once shredded. (Stored, it is sealed:
    /// `"enc:v1:..."`; the catalog describes what readers see.)
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Option<T>>::json_schema(generator)
    }
}
