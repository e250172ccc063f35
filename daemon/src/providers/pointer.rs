//! The strings at a few JSON pointers of a body (an event's id and type), found in one pass
//! with no JSON tree. The pass reads every string, escape and number as serde_json reads them
//! into a `Value`, so it accepts exactly the bodies a `Value` would, and a repeated key counts
//! by its last value as it would there (and in PostgreSQL's jsonb). Skipping values with
//! `IgnoredAny` would be cheaper still but accepts lone surrogates (`"\ud800"`), which
//! PostgreSQL refuses later.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// What a body holds at the pointers asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    /// Whether the body is a JSON object; when it is not, nothing is found.
    pub object: bool,
    /// The string at each pointer, in the order asked; `None` where there is none, or a value
    /// of another type.
    pub strings: Vec<Option<String>>,
    /// Whether PostgreSQL's jsonb is sure to take the body as serde_json did, so the database
    /// need not parse it again to find out: every number is a 64-bit integer (jsonb's numeric
    /// refuses some that an f64 takes, such as `1e-20000`), and no escaped string holds U+0000,
    /// which jsonb refuses, or a character beyond ASCII, which it refuses in a database that
    /// is not UTF-8.
    pub jsonb_as_is: bool,
}

/// Reads `body`, which must be JSON, for the strings at `pointers` (RFC 6901, as
/// `serde_json::Value::pointer` reads them).
pub fn strings_at(body: &[u8], pointers: &[&str]) -> serde_json::Result<Found> {
    assert!(pointers.len() <= 64, "at most 64 pointers");
    let mut targets: Vec<Target> = pointers.iter().map(|p| Target::new(p)).collect();
    let live = (0..targets.len())
        .filter(|&i| targets[i].tokens.as_ref().is_some_and(|t| !t.is_empty()))
        .fold(0u64, |mask, i| mask | 1 << i);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let mut jsonb_as_is = true;
    let object = Walk {
        targets: &mut targets,
        jsonb_as_is: &mut jsonb_as_is,
        depth: 0,
        live,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(Found {
        object,
        strings: targets
            .into_iter()
            .map(|t| t.found.filter(|_| object))
            .collect(),
        jsonb_as_is,
    })
}

struct Target<'p> {
    /// `None` for a pointer that is not one (not empty and not starting with `/`).
    tokens: Option<Vec<Cow<'p, str>>>,
    found: Option<String>,
}

impl<'p> Target<'p> {
    fn new(pointer: &'p str) -> Self {
        let tokens = match pointer {
            "" => Some(Vec::new()),
            p if p.starts_with('/') => Some(
                p[1..]
                    .split('/')
                    .map(|t| match t.contains('~') {
                        true => Cow::Owned(t.replace("~1", "/").replace("~0", "~")),
                        false => Cow::Borrowed(t),
                    })
                    .collect(),
            ),
            _ => None,
        };
        Target {
            tokens,
            found: None,
        }
    }

    fn token(&self, depth: usize) -> Option<&str> {
        self.tokens.as_ref()?.get(depth).map(|t| t.as_ref())
    }

    fn ends_at(&self, depth: usize) -> bool {
        self.tokens.as_ref().is_some_and(|t| t.len() == depth)
    }
}

/// One value of the body at `depth`, under the path that the `live` targets (a bit each) still
/// follow. Answers whether the value is an object.
struct Walk<'t, 'p> {
    targets: &'t mut [Target<'p>],
    jsonb_as_is: &'t mut bool,
    depth: usize,
    live: u64,
}

impl Walk<'_, '_> {
    fn each_live(&mut self, mut f: impl FnMut(usize, &mut Target)) {
        for (i, target) in self.targets.iter_mut().enumerate() {
            if self.live & (1 << i) != 0 {
                f(i, target);
            }
        }
    }

    /// A string value: whatever ends here has found it.
    fn string(mut self, s: &str) -> bool {
        let depth = self.depth;
        self.each_live(|_, t| {
            if t.ends_at(depth) {
                t.found = Some(s.to_owned());
            }
        });
        false
    }

    /// A value that is not a string: whatever ends here has no string.
    fn other(mut self) -> bool {
        let depth = self.depth;
        self.each_live(|_, t| {
            if t.ends_at(depth) {
                t.found = None;
            }
        });
        false
    }

    /// The targets that go on into the member `matches` accepts; a repeated member starts
    /// them over, so the last one counts.
    fn enter(&mut self, matches: impl Fn(&str) -> bool) -> u64 {
        let depth = self.depth;
        let mut next = 0;
        self.each_live(|i, t| {
            if t.token(depth).is_some_and(&matches) {
                t.found = None;
                next |= 1 << i;
            }
        });
        next
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    // serde_json lends a string without escapes and copies one with them.
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<bool, E> {
        Ok(self.string(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<bool, E> {
        *self.jsonb_as_is &= escapes_as_is(s);
        Ok(self.string(s))
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(self.other())
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(self.other())
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(self.other())
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        *self.jsonb_as_is = false;
        Ok(self.other())
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(self.other())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<bool, A::Error> {
        while let Some(key) = map.next_key_seed(Key(self.jsonb_as_is))? {
            let live = self.enter(|token| token == key);
            map.next_value_seed(Walk {
                targets: self.targets,
                jsonb_as_is: self.jsonb_as_is,
                depth: self.depth + 1,
                live,
            })?;
        }
        self.other();
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<bool, A::Error> {
        let mut index = 0usize;
        loop {
            let live = self.enter(|token| array_index(token) == Some(index));
            let walk = Walk {
                targets: self.targets,
                jsonb_as_is: self.jsonb_as_is,
                depth: self.depth + 1,
                live,
            };
            if seq.next_element_seed(walk)?.is_none() {
                break;
            }
            index += 1;
        }
        Ok(self.other())
    }
}

/// A member's name, read (and validated) as serde_json reads it, borrowed where it has no
/// escapes; one with escapes answers for [`Found::jsonb_as_is`].
struct Key<'t>(&'t mut bool);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        *self.0 &= escapes_as_is(s);
        Ok(Cow::Owned(s.to_owned()))
    }
}

/// Whether jsonb takes a string that was written with escapes as serde_json read it (see
/// [`Found::jsonb_as_is`]); it cannot tell which characters were escaped, so it asks of all.
fn escapes_as_is(s: &str) -> bool {
    s.is_ascii() && !s.contains('\0')
}

/// An array index as a JSON pointer writes it: digits, no leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// What `Value::pointer` finds, for comparison; a tree cannot tell what was escaped, so
    /// it takes `jsonb_as_is` from the walk.
    fn by_tree(body: &[u8], pointers: &[&str], jsonb_as_is: bool) -> Option<Found> {
        let value: Value = serde_json::from_slice(body).ok()?;
        Some(Found {
            object: value.is_object(),
            jsonb_as_is,
            strings: pointers
                .iter()
                .map(|p| {
                    value
                        .is_object()
                        .then(|| value.pointer(p).and_then(Value::as_str).map(str::to_owned))
                        .flatten()
                })
                .collect(),
        })
    }

    #[test]
    fn finds_what_a_json_tree_finds() {
        let pointers = [
            "/id",
            "/type",
            "/data/id",
            "/data/event_type",
            "/items/1/id",
            "/a~1b/c~0d",
            "",
            "nope",
            "/items/01",
            "/n",
        ];
        let bodies: &[&[u8]] = &[
            br#"{"id":"evt_1","type":"invoice.paid","data":{"id":"d","event_type":"call.hangup"}}"#,
            br#"{"id":"a","id":"b","data":{"id":"x"},"data":{"other":1}}"#,
            br#"{"id":"a","id":7,"type":null,"data":[1,2]}"#,
            br#"{"items":[{"id":"first"},{"id":"se\"c\u00f6nd"},{"id":3}],"n":12.5e3}"#,
            br#"{"a/b":{"c~d":"escaped"},"items":["x","y"]}"#,
            br#"{"t\u0079pe":"by escape","data":{"id":{"deep":"no"}}}"#,
            br#"{"data":{"id":"1","event_type":"x"},"data":{"id":"2"}}"#,
            br#"["id","type"]"#,
            br#""just a string""#,
            b"null",
            br#"{}"#,
        ];
        for body in bodies {
            let found = strings_at(body, &pointers).expect("valid JSON");
            let jsonb_as_is = found.jsonb_as_is;
            assert_eq!(
                Some(found),
                by_tree(body, &pointers, jsonb_as_is),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn refuses_what_a_json_tree_refuses() {
        let bodies: &[&[u8]] = &[
            b"",
            b"{",
            br#"{"id":"a"} trailing"#,
            br#"{"k":1e999}"#,
            br#"{"k":01}"#,
            br#"{"k":"\ud800"}"#,
            br#"{"\ud800":1}"#,
            br#"{"k":"\x"}"#,
            b"{\"k\":\"tab\traw\"}",
            b"{\"k\":\"\xc3\x28\"}",
            b"{\"\xed\xa0\x80\":1}",
            b"\xef\xbb\xbf{}",
        ];
        for body in bodies {
            assert!(by_tree(body, &["/id"], true).is_none());
            assert!(
                strings_at(body, &["/id"]).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(
            strings_at(deep.as_bytes(), &["/id"]).is_err(),
            "nesting limit"
        );
    }

    #[test]
    fn says_which_bodies_jsonb_takes_as_they_are() {
        let cases: &[(&[u8], bool)] = &[
            (
                br#"{"id":"evt_1","n":-9223372036854775808,"m":18446744073709551615}"#,
                true,
            ),
            (
                b"{\"raw\":\"caf\xc3\xa9 \xe2\x82\xac\",\"list\":[1,true,null,{\"k\":\"v\"}]}",
                true,
            ),
            (br#"{"quote":"a \"b\" \\ \/ \n\t"}"#, true),
            (br#"{"esc\naped key":1}"#, true),
            (br#"{"big":18446744073709551616}"#, false),
            (br#"{"f":1.5}"#, false),
            (br#"{"f":1e2}"#, false),
            (br#"{"tiny":1e-20000}"#, false),
            (br#"{"nul":"a\u0000b"}"#, false),
            (br#"{"a\u0000b":1}"#, false),
            (br#"{"escaped":"caf\u00e9"}"#, false),
            (br#"{"emoji":"\ud83d\ude00"}"#, false),
            (b"{\"raw and escaped\":\"caf\xc3\xa9\\n\"}", false),
            (br#"[{"deep":[{"f":0.1}]}]"#, false),
        ];
        for (body, as_is) in cases {
            let found = strings_at(body, &["/id"]).expect("valid JSON");
            assert_eq!(
                found.jsonb_as_is,
                *as_is,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
