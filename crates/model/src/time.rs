//! Times in records: `chrono::DateTime<Utc>` in memory, RFC 3339 text in
//! the repository, each field written exactly as the format specifies
//! (docs/format.md), so that a record's bytes, and so its id, do not change
//! with the library's defaults. Any RFC 3339 offset is read and converted
//! to UTC.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// A point in time, in UTC.
pub type Time = DateTime<Utc>;

fn parse<'de, D: Deserializer<'de>>(s: &str) -> Result<Time, D::Error> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 time: {e}")))
}

/// Microseconds and `Z`: `2026-11-25T04:00:00.000000Z` (manifest times).
pub mod micros {
    use super::{parse, Deserialize, Deserializer, SecondsFormat, Serializer, Time};

    /// Writes `t` as `2026-11-25T04:00:00.000000Z`.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(t: &Time, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    /// Reads any RFC 3339 time.
    ///
    /// # Errors
    /// Text that is not RFC 3339.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        parse::<D>(&String::deserialize(d)?)
    }
}

/// Fractional seconds only when there are any, and `+00:00`:
/// `2026-11-25T04:00:00+00:00` (config, leases, shard records).
pub mod offset {
    use super::{parse, Deserialize, Deserializer, Serializer, Time};

    /// Writes `t` as `2026-11-25T04:00:00.123456789+00:00`.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(t: &Time, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    /// Reads any RFC 3339 time.
    ///
    /// # Errors
    /// Text that is not RFC 3339.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        parse::<D>(&String::deserialize(d)?)
    }

    /// The same, for an optional time.
    pub mod option {
        use super::super::{parse, Deserialize, Deserializer, Serializer, Time};

        /// Writes `Some(t)` as [`super::serialize`] does (the field is
        /// skipped when `None`).
        ///
        /// # Errors
        /// The serializer's.
        #[allow(clippy::ref_option)] // serde's `with` passes `&Option<T>`
        pub fn serialize<S: Serializer>(t: &Option<Time>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&t.to_rfc3339()),
                None => s.serialize_none(),
            }
        }

        /// Reads an optional RFC 3339 time.
        ///
        /// # Errors
        /// Text that is not RFC 3339.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Time>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| parse::<D>(&s))
                .transpose()
        }

        /// Reads an optional time, taking text that is not RFC 3339 as
        /// absent (a lease's `started`: the format falls back to the
        /// object's last-modified time).
        ///
        /// # Errors
        /// A value that is not a string or null.
        pub fn deserialize_lenient<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Time>, D::Error> {
            Ok(Option::<String>::deserialize(d)?.and_then(|s| parse::<D>(&s).ok()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Time;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Both {
        #[serde(with = "super::micros")]
        a: Time,
        #[serde(with = "super::offset")]
        b: Time,
        #[serde(
            with = "super::offset::option",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        c: Option<Time>,
    }

    #[test]
    fn times_are_written_as_the_format_says_and_read_from_any_offset() {
        let t: Time = "2026-11-25T04:00:00Z".parse().expect("time");
        let v = Both {
            a: t,
            b: t,
            c: Some(t),
        };
        let json = serde_json::to_string(&v).expect("json");
        assert_eq!(
            json,
            r#"{"a":"2026-11-25T04:00:00.000000Z","b":"2026-11-25T04:00:00+00:00","c":"2026-11-25T04:00:00+00:00"}"#
        );
        assert_eq!(serde_json::from_str::<Both>(&json).expect("parses"), v);
        let other: Both = serde_json::from_str(
            r#"{"a":"2026-11-25T05:00:00+01:00","b":"2026-11-25T04:00:00.000Z"}"#,
        )
        .expect("any offset");
        assert_eq!((other.a, other.b, other.c), (t, t, None));
        let bad = serde_json::from_str::<Both>(r#"{"a":"yesterday","b":"2026-11-25T04:00:00Z"}"#)
            .expect_err("not RFC 3339");
        assert!(bad.to_string().contains("yesterday"), "{bad}");
    }

    #[test]
    fn a_lease_start_that_does_not_parse_is_absent_and_unknown_kinds_are_kept_apart() {
        let l: crate::Lease = serde_json::from_str(
            r#"{"kind":"drill","host":"h","pid":1,"started":"soon","lease_secs":60}"#,
        )
        .expect("a lease with a bad start still parses");
        assert_eq!((l.started, l.kind), (None, crate::LeaseKind::Other));
        let l: crate::Lease = serde_json::from_str(
            r#"{"kind":"prune","host":"h","pid":1,"started":"2026-11-25T04:00:00+00:00","lease_secs":60}"#,
        )
        .expect("parses");
        assert_eq!(l.kind, crate::LeaseKind::Prune);
        assert_eq!(
            serde_json::to_string(&l).expect("json"),
            r#"{"kind":"prune","host":"h","pid":1,"started":"2026-11-25T04:00:00+00:00","lease_secs":60}"#
        );
    }
}
