//! Tolerant typed views of webhook JSON: every field records whether it was
//! absent, of the expected kind, or of another kind, so a parser can name the
//! exact JSON path of a wrong shape instead of serde's "at line 1 column 80".
//!
//! Why not `serde_json::Value`: the typed view is built in one pass, borrows
//! strings from the body where they need no unescaping, and skips every field
//! a parser does not declare without building it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::PayloadError;

/// A JSON value expected to be of kind `T`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Field<T> {
    /// Not in the document, or `null`.
    #[default]
    Absent,
    Present(T),
    /// Of another JSON kind; names the kind found ("a number", …).
    Mistyped(&'static str),
}

impl<T: FieldKind> Field<T> {
    /// The value when present; absent is fine, another kind is not.
    pub(crate) fn optional(&self, path: &JsonPath<'_>) -> Result<Option<&T>, Problem> {
        match self {
            Field::Absent => Ok(None),
            Field::Present(value) => Ok(Some(value)),
            Field::Mistyped(found) => Err(Problem::new(
                path,
                format!("expected {}, found {found}", T::EXPECTED),
            )),
        }
    }

    /// The value, which must be present and of the expected kind.
    pub(crate) fn required(&self, path: &JsonPath<'_>) -> Result<&T, Problem> {
        match self.optional(path)? {
            Some(value) => Ok(value),
            None => Err(Problem::new(
                path,
                format!("missing; expected {}", T::EXPECTED),
            )),
        }
    }
}

/// A JSON string, borrowed from the body when it holds no escapes.
pub(crate) type Text<'a> = Field<Cow<'a, str>>;

/// The JSON kinds a [`Field`] can expect, and how to read each.
pub(crate) trait FieldKind: Sized {
    /// In words, for error messages: "a string".
    const EXPECTED: &'static str;
}

impl FieldKind for Cow<'_, str> {
    const EXPECTED: &'static str = "a string";
}

impl<T> FieldKind for Vec<T> {
    const EXPECTED: &'static str = "an array";
}

/// Marks a `#[derive(Deserialize)]` struct as a JSON object that a [`Field`]
/// may hold. Its own fields should be [`Field`]s too, so that no wrong kind
/// anywhere inside can fail deserialization without a path.
pub(crate) trait JsonObject {}

impl<T: JsonObject> FieldKind for T {
    const EXPECTED: &'static str = "an object";
}

/// How a [`Field`] of each kind reads the JSON it meets; `None`: wrong kind.
trait ReadKind<'de>: Sized {
    fn from_str(_value: Cow<'de, str>) -> Option<Self> {
        None
    }

    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Option<Self>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl<'de: 'a, 'a> ReadKind<'de> for Cow<'a, str> {
    fn from_str(value: Cow<'de, str>) -> Option<Self> {
        Some(value)
    }
}

impl<'de, T: Deserialize<'de>> ReadKind<'de> for Vec<T> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        // Payloads list a handful of resources or events; the hint is capped so
        // a hostile length claim cannot reserve memory.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Some(items))
    }
}

impl<'de, T: JsonObject + Deserialize<'de>> ReadKind<'de> for T {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
    }
}

impl<'de, T: ReadKind<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor(PhantomData))
    }
}

struct FieldVisitor<T>(PhantomData<T>);

impl<T> FieldVisitor<T> {
    fn found<E>(value: Option<T>, kind: &'static str) -> Result<Field<T>, E> {
        Ok(value.map_or(Field::Mistyped(kind), Field::Present))
    }
}

impl<'de, T: ReadKind<'de>> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Absent)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Absent)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        Field::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Field::Mistyped("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Field::Mistyped("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Field::Mistyped("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Field::Mistyped("a number"))
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Self::found(T::from_str(Cow::Borrowed(value)), "a string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Self::found(T::from_str(Cow::Owned(value.to_owned())), "a string")
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Self::found(T::from_str(Cow::Owned(value)), "a string")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Self::found(T::from_seq(seq)?, "an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Self::found(T::from_map(map)?, "an object")
    }
}

/// Where in the document a value sits, e.g. `event_data.resources[1].tag`.
/// Built on the stack as a parser descends and rendered only for an error.
#[derive(Debug, Clone, Copy)]
pub(crate) enum JsonPath<'p> {
    Root,
    Key(&'p JsonPath<'p>, &'static str),
    Index(&'p JsonPath<'p>, usize),
}

/// The whole body.
pub(crate) static ROOT: JsonPath<'static> = JsonPath::Root;

impl<'p> JsonPath<'p> {
    pub(crate) fn key(&'p self, key: &'static str) -> JsonPath<'p> {
        JsonPath::Key(self, key)
    }

    pub(crate) fn index(&'p self, index: usize) -> JsonPath<'p> {
        JsonPath::Index(self, index)
    }

    fn write_to(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonPath::Root => Ok(()),
            JsonPath::Key(parent, key) => {
                parent.write_to(f)?;
                if !matches!(parent, JsonPath::Root) {
                    f.write_str(".")?;
                }
                f.write_str(key)
            }
            JsonPath::Index(parent, index) => {
                parent.write_to(f)?;
                write!(f, "[{index}]")
            }
        }
    }
}

impl fmt::Display for JsonPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonPath::Root => f.write_str("(body)"),
            _ => self.write_to(f),
        }
    }
}

/// A wrong shape at one path; becomes [`PayloadError::Shape`] of a format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) path: String,
    pub(crate) reason: String,
}

impl Problem {
    pub(crate) fn new(path: &JsonPath<'_>, reason: impl Into<String>) -> Self {
        Self {
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn into_error(self, format: &'static str) -> PayloadError {
        PayloadError::Shape {
            format,
            detail: format!("{}: {}", self.path, self.reason),
        }
    }
}

/// Reads `body` as a JSON object of type `T`. Syntax errors (and bodies that
/// are not UTF-8) are [`PayloadError::Json`]; a body that is valid JSON but not an object, or an
/// object serde itself rejects (a duplicated key), is a shape error.
pub(crate) fn decode<'de, T>(body: &'de [u8], format: &'static str) -> Result<T, PayloadError>
where
    T: JsonObject + Deserialize<'de>,
{
    // serde_json skips the strings of undeclared fields without checking their
    // UTF-8; JSON must be UTF-8 throughout, so the whole body is checked first.
    let text = std::str::from_utf8(body).map_err(|error| {
        PayloadError::Json(format!(
            "body is not UTF-8 (invalid byte at offset {})",
            error.valid_up_to()
        ))
    })?;
    let root: Field<T> = serde_json::from_str(text).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => PayloadError::Shape {
            format,
            detail: error.to_string(),
        },
        _ => PayloadError::Json(error.to_string()),
    })?;
    match root {
        Field::Present(value) => Ok(value),
        Field::Absent => {
            Err(Problem::new(&ROOT, "expected an object, found null").into_error(format))
        }
        Field::Mistyped(found) => Err(Problem::new(
            &ROOT,
            format!("expected an object, found {found}"),
        )
        .into_error(format)),
    }
}

/// A value from the payload quoted for an error message: escaped, and cut
/// short so a hostile payload cannot inflate the 400 answer.
pub(crate) fn quote(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut chars = value.char_indices();
    match chars.nth(MAX_CHARS) {
        Some((cut, _)) => format!("{:?}…", value.get(..cut).unwrap_or_default()),
        None => format!("{value:?}"),
    }
}
