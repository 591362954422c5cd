//! JSON objects parsed the way a JWS verifier must: duplicate member names are
//! an error at any depth. `serde_json` keeps the last duplicate silently, and a
//! token whose `alg` or `aud` means one thing to us and another to the app is a
//! classic confusion attack (RFC 7515 section 4, RFC 8725 section 3.11).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `bytes` as one JSON object, refusing duplicate member names anywhere.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, &'static str> {
    let Strict(value) = serde_json::from_slice(bytes)
        .map_err(|e| if e.to_string().contains(DUPLICATE) { "duplicate member name" } else { "not valid JSON" })?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err("not a JSON object"),
    }
}

const DUPLICATE: &str = "duplicate member name";

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            // Names are compared after unescaping, so `"a\u006cg"` duplicates `"alg"`.
            if members.insert(name, value).is_some() {
                return Err(de::Error::custom(DUPLICATE));
            }
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_objects() {
        let map = parse_object(br#"{"a": 1, "b": [1, {"c": null}], "d": 1.5}"#).expect("valid");
        assert_eq!(map.len(), 3);
        assert_eq!(map["d"], 1.5);
    }

    #[test]
    fn refuses_duplicates_at_any_depth_and_through_escapes() {
        for bad in [
            &br#"{"alg": "ES256", "alg": "RS256"}"#[..],
            br#"{"x": {"k": 1, "k": 2}}"#,
            br#"{"x": [{"k": 1, "k": 2}]}"#,
            br#"{"alg": "ES256", "a\u006cg": "RS256"}"#,
        ] {
            assert_eq!(parse_object(bad), Err("duplicate member name"), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn refuses_non_objects_and_trailing_garbage() {
        for bad in [&b"[]"[..], b"\"s\"", b"1", b"null", b"{} {}", b"{", b""] {
            assert!(parse_object(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
