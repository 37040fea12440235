//! How a [`Moment`] is written in JSON. By default as RFC 3339 UTC text
//! (`2026-05-01T10:00:00Z`, a fraction only when there is one), so a time put in an
//! event's details or a payload reads as a time. Fields with a form of their own say so:
//! SQLite's text where `status --json` and `history --json` print a column, whole Unix
//! seconds in `jobs.clocks` (`datetime(x, 'unixepoch')` reads them). Read back from text
//! or seconds (clamped, so a hand edit's `u64::MAX` is the year 9999, never a panic); a
//! negative or fractional number is refused: the caller says the value is damaged rather
//! than guess.

use std::fmt;

use serde::{
    de::{self, Visitor},
    Deserialize, Deserializer, Serialize, Serializer,
};

use super::Moment;

impl Serialize for Moment {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Moment {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Moment, D::Error> {
        deserializer.deserialize_any(AnyForm)
    }
}

/// Reads every form a moment was ever written in.
struct AnyForm;

impl<'de> Visitor<'de> for AnyForm {
    type Value = Moment;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a time: Unix seconds or RFC 3339 text")
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Moment, E> {
        Ok(Moment::from_unix_secs(
            i64::try_from(secs).unwrap_or(i64::MAX),
        ))
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Moment, E> {
        u64::try_from(secs)
            .map_err(|_| E::custom(format!("a time before 1970: {secs}")))
            .and_then(|secs| self.visit_u64(secs))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Moment, E> {
        Moment::parse(text)
            .ok_or_else(|| E::custom(format!("not a time in 1970 to 9999: {text:?}")))
    }
}

/// A moment as SQLite's text (`2026-05-01 10:00:00.250`): the time columns' own form,
/// as `status --json` and `history --json` print them.
pub mod sql_text {
    use super::{Moment, Serializer};

    /// Writes [`Moment::sql_text`].
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(at: &Moment, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&at.sql_text())
    }
}

/// An optional moment as SQLite's text (see [`sql_text`]).
pub mod sql_text_opt {
    use super::{Moment, Serializer};

    /// Writes [`Moment::sql_text`], or null.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(at: &Option<Moment>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_str(&at.sql_text()),
            None => serializer.serialize_none(),
        }
    }
}

/// A moment as RFC 3339 text to the second (`2026-05-01T10:00:00Z`).
pub mod rfc3339 {
    use super::{Moment, Serializer};

    /// Writes [`Moment::rfc3339_seconds`].
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(at: &Moment, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&at.rfc3339_seconds())
    }
}

/// An optional moment as RFC 3339 text to the second (`2026-05-01T10:00:00Z`): the
/// service's times kept in a snapshot, and the ETAs and deadlines `status --json` prints.
/// Text that is not a time in 1970 to 9999 reads back as none.
pub mod rfc3339_opt {
    use super::{Deserialize, Deserializer, Moment, Serializer};

    /// Writes [`Moment::rfc3339_seconds`], or null.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(at: &Option<Moment>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_str(&at.rfc3339_seconds()),
            None => serializer.serialize_none(),
        }
    }

    /// Reads it back; a value that is not a time is none.
    ///
    /// # Errors
    /// The deserializer's.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Moment>, D::Error> {
        let value = Option::<serde_json::Value>::deserialize(deserializer)?;
        Ok(value.and_then(|v| serde_json::from_value(v).ok()))
    }
}

/// Whole Unix seconds (`jobs.clocks`).
pub mod unix_secs {
    use super::{AnyForm, Deserializer, Moment, Serializer};

    /// Writes [`Moment::unix_secs`].
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(at: &Moment, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(at.unix_secs())
    }

    /// Reads seconds or text (see the module's words).
    ///
    /// # Errors
    /// A value that is neither.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Moment, D::Error> {
        deserializer.deserialize_any(AnyForm)
    }
}

/// An optional moment as whole Unix seconds (see [`unix_secs`]).
pub mod unix_secs_opt {
    use super::{Deserialize, Deserializer, Moment, Serializer};

    /// Writes [`Moment::unix_secs`], or null.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(at: &Option<Moment>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_i64(at.unix_secs()),
            None => serializer.serialize_none(),
        }
    }

    /// Reads seconds, text or null.
    ///
    /// # Errors
    /// A value that is none of them.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Moment>, D::Error> {
        Ok(Option::<Secs>::deserialize(deserializer)?.map(|s| s.0))
    }

    /// A moment read through [`super::unix_secs`].
    #[derive(Deserialize)]
    struct Secs(#[serde(with = "super::unix_secs")] Moment);
}

/// A copy's rate anchor, `[percent, Unix seconds]`, or null.
pub mod unix_secs_mark {
    use serde::ser::SerializeTuple;

    use super::{Deserialize, Deserializer, Moment, Serializer};

    /// Writes `[percent, seconds]`, or null.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(
        mark: &Option<(i64, Moment)>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match mark {
            Some((percent, at)) => {
                let mut pair = serializer.serialize_tuple(2)?;
                pair.serialize_element(percent)?;
                pair.serialize_element(&at.unix_secs())?;
                pair.end()
            }
            None => serializer.serialize_none(),
        }
    }

    /// Reads `[percent, seconds or text]`, or null.
    ///
    /// # Errors
    /// A value of another shape.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<(i64, Moment)>, D::Error> {
        Ok(Option::<Mark>::deserialize(deserializer)?.map(|m| (m.0, m.1)))
    }

    /// The pair as stored.
    #[derive(Deserialize)]
    struct Mark(i64, #[serde(with = "super::unix_secs")] Moment);
}
