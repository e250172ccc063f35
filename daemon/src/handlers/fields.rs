//! Payload fields as the handlers read them: deserialized straight from the body into the few
//! fields each handler needs, skipping the rest unparsed, with no JSON tree in between (the
//! tree and its allocations were most of the workers' CPU). A field of an unexpected type
//! reads as absent, as a JSON pointer would find it absent, so one odd field fails only the
//! handler that needs it and only with that field's name. (serde_with's `DefaultOnError` gives
//! the same leniency by buffering every value first, which is the tree this module avoids.)

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What a field makes of each kind of JSON value; any kind it does not override reads as
/// absent (its `Default`), its contents skipped.
pub trait Lenient: Default {
    fn from_text(_: &str) -> Self {
        Self::default()
    }
    fn from_i64(_: i64) -> Self {
        Self::default()
    }
    fn from_u64(_: u64) -> Self {
        Self::default()
    }
    fn from_f64(_: f64) -> Self {
        Self::default()
    }
    fn from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::default())
    }
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::default())
    }
}

/// A JSON string.
#[derive(Debug, Default)]
pub struct Text(pub Option<String>);

impl Lenient for Text {
    fn from_text(s: &str) -> Self {
        Text(Some(s.to_owned()))
    }
}

/// A JSON integer that fits an `i64` (a unix timestamp, say).
#[derive(Debug, Default)]
pub struct Int(pub Option<i64>);

impl Lenient for Int {
    fn from_i64(n: i64) -> Self {
        Int(Some(n))
    }
    fn from_u64(n: u64) -> Self {
        Int(i64::try_from(n).ok())
    }
}

/// A key that senders write as a string (a uuid) or as a number, as text.
#[derive(Debug, Default)]
pub struct Key(pub Option<String>);

impl Lenient for Key {
    fn from_text(s: &str) -> Self {
        Key(Some(s.to_owned()))
    }
    fn from_i64(n: i64) -> Self {
        Key(Some(n.to_string()))
    }
    fn from_u64(n: u64) -> Self {
        Key(Some(n.to_string()))
    }
    fn from_f64(n: f64) -> Self {
        // As serde_json writes the number, which is how it reads back.
        Key(serde_json::Number::from_f64(n).map(|n| n.to_string()))
    }
}

/// A JSON object read as `T` (a struct of lenient fields under `#[serde(default)]`).
#[derive(Debug, Default)]
pub struct Obj<T>(pub T);

impl<T: Default + for<'de> Deserialize<'de>> Lenient for Obj<T> {
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Obj)
    }
}

/// A JSON array's first element, read as an object of `T`.
#[derive(Debug, Default)]
pub struct First<T>(pub T);

impl<T: Default + for<'de> Deserialize<'de>> Lenient for First<T> {
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let first = seq.next_element::<Obj<T>>()?.unwrap_or_default();
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(First(first.0))
    }
}

/// Reads any JSON value into `T` through its [`Lenient`] rules.
pub fn deserialize<'de, T: Lenient, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error> {
    deserializer.deserialize_any(LenientVisitor(PhantomData))
}

struct LenientVisitor<T>(PhantomData<T>);

impl<'de, T: Lenient> Visitor<'de> for LenientVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_i64<E>(self, n: i64) -> Result<T, E> {
        Ok(T::from_i64(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<T, E> {
        Ok(T::from_u64(n))
    }
    fn visit_f64<E>(self, n: f64) -> Result<T, E> {
        Ok(T::from_f64(n))
    }
    fn visit_str<E>(self, s: &str) -> Result<T, E> {
        Ok(T::from_text(s))
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_none<E>(self) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::from_seq(seq)
    }
}

/// `Deserialize` for lenient types, through [`deserialize`].
macro_rules! deserialize_leniently {
    ($($ty:ident $(<$param:ident>)?),+ $(,)?) => {$(
        impl<'de $(, $param: Default + for<'a> ::serde::Deserialize<'a>)?>
            ::serde::Deserialize<'de> for $ty $(<$param>)?
        {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                $crate::handlers::fields::deserialize(deserializer)
            }
        }
    )+};
}
pub(crate) use deserialize_leniently;

deserialize_leniently!(Text, Int, Key, Obj<T>, First<T>);

/// Reads a body as an object of `T`; anything else (not JSON, not an object, a field named
/// twice) reads as `T`'s default, every field absent, which each handler refuses or handles
/// as it would a payload that lacks its fields.
pub fn read<T: Default + for<'de> Deserialize<'de>>(body: &[u8]) -> T {
    serde_json::from_slice::<Obj<T>>(body)
        .map(|o| o.0)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(default)]
    struct Sample {
        name: Text,
        at: Int,
        key: Key,
        inner: Obj<Inner>,
        items: First<Inner>,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(default)]
    struct Inner {
        id: Text,
    }

    #[test]
    fn fields_of_their_type_are_read() {
        let s: Sample = read(
            br#"{"name":"a\"b","at":17,"key":42,"inner":{"id":"x"},"items":[{"id":"y"},{"id":"z"}],
                "other":{"deep":[1,2,{"id":"no"}]}}"#,
        );
        assert_eq!(s.name.0.as_deref(), Some("a\"b"));
        assert_eq!(s.at.0, Some(17));
        assert_eq!(s.key.0.as_deref(), Some("42"));
        assert_eq!(s.inner.0.id.0.as_deref(), Some("x"));
        assert_eq!(s.items.0.id.0.as_deref(), Some("y"));
    }

    #[test]
    fn fields_of_another_type_read_as_absent_and_leave_the_rest() {
        let s: Sample =
            read(br#"{"name":{"a":[1]},"at":1.5,"key":"k-1","inner":["id"],"items":{"id":"y"}}"#);
        assert_eq!(s.name.0, None);
        assert_eq!(s.at.0, None);
        assert_eq!(s.key.0.as_deref(), Some("k-1"));
        assert_eq!(s.inner.0.id.0, None);
        assert_eq!(s.items.0.id.0, None);
        let s: Sample = read(br#"{"at":18446744073709551615,"key":1.5,"items":["x",{"id":"y"}]}"#);
        assert_eq!(s.at.0, None, "above i64::MAX");
        assert_eq!(s.key.0.as_deref(), Some("1.5"));
        assert_eq!(s.items.0.id.0, None, "the first element is not an object");
    }

    #[test]
    fn a_body_that_is_not_an_object_reads_as_every_field_absent() {
        for body in [
            &b"[\"a\", 17]"[..],
            b"\"text\"",
            b"not json",
            b"{\"name\":\"a\"} x",
        ] {
            let s: Sample = read(body);
            assert_eq!((s.name.0, s.at.0), (None, None), "{body:?}");
        }
    }
}
