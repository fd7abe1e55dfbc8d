//! Reads a body's items one at a time: the array of items (the body itself, or the array
//! under one key of an object body) is never held as a whole `serde_json::Value`, only
//! the item in hand. A `Value` costs many times the bytes it was parsed from (an object
//! of four fields takes over a kilobyte), so a body parsed whole needed memory the body's
//! size never suggested; item by item the parse needs its largest item's worth
//! ([`super::cost`] bounds it before the parse starts).
//!
//! Members of an object body other than the items are skipped without being stored,
//! except one string member a format asks for (NGSI's `subscriptionId`).
//!
//! An item is whatever the format deserializes it into: a `Value` (NGSI, SenML), or a
//! type of the format's own that keeps only the fields it reads (`/v1/measurements`),
//! borrowing their text from the body where it can.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{BodyError, json_error};

/// Where a format keeps its items.
pub(super) struct Shape {
    /// The body may be the array of items itself.
    pub bare_array: bool,
    /// The body may be an object with the items under this key.
    pub items_key: Option<&'static str>,
    /// A string member of an object body to keep.
    pub string_key: Option<&'static str>,
}

/// What the body was, beyond its items.
#[derive(Debug, Default)]
pub(super) struct Outline {
    /// "an array", "an object", "a number"...: the body as a whole.
    pub body_kind: &'static str,
    /// The items key: absent, an array (streamed), or something else (its kind).
    pub items: Member,
    /// The string key: absent, its text, or the kind found instead.
    pub string: Option<Result<String, &'static str>>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) enum Member {
    #[default]
    Absent,
    Array,
    Other(&'static str),
    Repeated,
}

/// Streams the items of `body` (as `shape` says where they are) to `each`, with their
/// index; `each` may stop the parse with an error. Malformed JSON anywhere in the body
/// is an error even after items were handed out (the caller stores nothing then).
pub(super) fn items<'b, T: Deserialize<'b>>(
    body: &'b [u8],
    shape: &Shape,
    each: &mut dyn FnMut(usize, T) -> Result<(), BodyError>,
) -> Result<Outline, BodyError> {
    let mut stopped = None;
    let mut outline = Outline::default();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let result = deserializer.deserialize_any(Body {
        shape,
        each,
        stopped: &mut stopped,
        outline: &mut outline,
    });
    if let Some(error) = stopped {
        return Err(error);
    }
    result.map_err(json_error)?;
    deserializer.end().map_err(json_error)?;
    Ok(outline)
}

struct Body<'a, 'f, T> {
    shape: &'a Shape,
    each: &'a mut (dyn FnMut(usize, T) -> Result<(), BodyError> + 'f),
    stopped: &'a mut Option<BodyError>,
    outline: &'a mut Outline,
}

/// The error a visitor returns to stop the deserializer once `each` said stop; the
/// caller reports `each`'s error instead.
fn stop<E: de::Error>() -> E {
    E::custom("stopped")
}

fn stream_seq<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    mut seq: A,
    each: &mut dyn FnMut(usize, T) -> Result<(), BodyError>,
    stopped: &mut Option<BodyError>,
) -> Result<(), A::Error> {
    let mut index = 0;
    while let Some(item) = seq.next_element::<T>()? {
        if let Err(error) = each(index, item) {
            *stopped = Some(error);
            return Err(stop());
        }
        index += 1;
    }
    Ok(())
}

macro_rules! scalar_kinds {
    ($($method:ident: $type:ty => $kind:expr),* $(,)?) => {
        $(fn $method<E: de::Error>(self, _: $type) -> Result<Self::Value, E> {
            self.found($kind);
            Ok(())
        })*
    };
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Body<'_, '_, T> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON body")
    }

    scalar_kinds! {
        visit_bool: bool => "a boolean",
        visit_i64: i64 => "a number",
        visit_u64: u64 => "a number",
        visit_f64: f64 => "a number",
        visit_str: &str => "a string",
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.found("null");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.outline.body_kind = "an array";
        if self.shape.bare_array {
            stream_seq(seq, self.each, self.stopped)
        } else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(())
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.outline.body_kind = "an object";
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if Some(key.as_ref()) == self.shape.items_key {
                if self.outline.items != Member::Absent {
                    self.outline.items = Member::Repeated;
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                self.outline.items = map.next_value_seed(Items {
                    each: &mut *self.each,
                    stopped: &mut *self.stopped,
                })?;
            } else if Some(key.as_ref()) == self.shape.string_key {
                self.outline.string = Some(map.next_value_seed(StringOrKind)?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<T> Body<'_, '_, T> {
    fn found(self, kind: &'static str) {
        self.outline.body_kind = kind;
    }
}

/// The value of the items key: streamed when it is an array.
struct Items<'a, 'f, T> {
    each: &'a mut (dyn FnMut(usize, T) -> Result<(), BodyError> + 'f),
    stopped: &'a mut Option<BodyError>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Items<'_, '_, T> {
    type Value = Member;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Member, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Items<'_, '_, T> {
    type Value = Member;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an array of items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Member, A::Error> {
        stream_seq(seq, self.each, self.stopped)?;
        Ok(Member::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Member, A::Error> {
        Kind.visit_map(map).map(Member::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Member, E> {
        Ok(Member::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Member, E> {
        Ok(Member::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Member, E> {
        Ok(Member::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Member, E> {
        Ok(Member::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Member, E> {
        Ok(Member::Other("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Member, E> {
        Ok(Member::Other("null"))
    }
}

/// A string member: its text, or what was found instead (skipped, not stored).
struct StringOrKind;

impl<'de> DeserializeSeed<'de> for StringOrKind {
    type Value = Result<String, &'static str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StringOrKind {
    type Value = Result<String, &'static str>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Ok(text.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Kind.visit_seq(seq).map(Err)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Kind.visit_map(map).map(Err)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err("null"))
    }
}

/// Skips a container, saying what it was.
pub(super) struct Kind;

impl Kind {
    pub(super) fn visit_seq<'de, A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<&'static str, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok("an array")
    }

    pub(super) fn visit_map<'de, A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<&'static str, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok("an object")
    }
}
