//! Well-known types whose JSON form matters to clients.
//!
//! `google.protobuf.Timestamp` is written in canonical proto3 JSON, RFC 3339 in UTC with a `Z`
//! suffix and 0, 3, 6 or 9 fractional digits (`2026-11-28T12:15:21.622230129Z`); the object
//! form `{"seconds":…}` breaks the e2b SDK. Any RFC 3339 offset is accepted on input.

use chrono::{DateTime, SecondsFormat};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// RFC 3339 in UTC, or `None` when out of range.
    pub fn to_rfc3339(&self) -> Option<String> {
        let nanos = u32::try_from(self.nanos).ok()?;
        let t = DateTime::from_timestamp(self.seconds, nanos)?;
        Some(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let t = DateTime::parse_from_rfc3339(s).ok()?;
        Some(Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.to_rfc3339() {
            Some(text) => s.serialize_str(&text),
            None => Err(serde::ser::Error::custom("timestamp out of range")),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&text)
            .ok_or_else(|| de::Error::custom(format!("invalid RFC 3339 timestamp {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json() {
        let t = Timestamp {
            seconds: 1_795_000_000,
            nanos: 5,
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2026-11-18T11:06:40.000000005Z\"");
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        let whole = Timestamp {
            seconds: 0,
            nanos: 0,
        };
        assert_eq!(
            serde_json::to_string(&whole).unwrap(),
            "\"1970-01-01T00:00:00Z\""
        );
        let offset: Timestamp = serde_json::from_str("\"1970-01-01T01:00:00+01:00\"").unwrap();
        assert_eq!(offset.seconds, 0);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
