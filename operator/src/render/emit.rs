//! Writes any `Serialize` value (typed Kubernetes objects, JSON values) as block-style YAML, deterministically,
//! quoting every string that could be read as anything else.
//!
//! It is a `serde` serializer that writes text as it goes: typed objects are printed without first being
//! turned into JSON values, and maps and fields come out in the order the value serializes them (field
//! order for Kubernetes types, key order for maps).

use std::fmt::{self, Write as _};

use serde::ser::{self, Serialize};

use super::escape::push_quoted;
use crate::yaml::plain_is_string;

/// A value that has no YAML form here (a map key that is not a scalar, an enum variant with data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot write as YAML: {0}")]
pub struct EmitError(String);

impl ser::Error for EmitError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EmitError(msg.to_string())
    }
}

/// One YAML document (without the `---` separator).
pub fn to_yaml<T: Serialize + ?Sized>(v: &T) -> Result<String, EmitError> {
    let mut out = String::with_capacity(1024);
    v.serialize(Writer {
        out: &mut out,
        at: At::Root,
    })?;
    Ok(out)
}

/// Many documents, each after a `---` line.
pub fn to_yaml_stream<'a, T: Serialize + 'a>(docs: impl IntoIterator<Item = &'a T>) -> Result<String, EmitError> {
    let mut out = String::with_capacity(8 * 1024);
    for d in docs {
        out.push_str("---\n");
        d.serialize(Writer {
            out: &mut out,
            at: At::Root,
        })?;
    }
    Ok(out)
}

/// Where the next value is written.
#[derive(Debug, Clone, Copy)]
enum At {
    /// A document's root.
    Root,
    /// After `key:`, the key indented by this much.
    MapValue(usize),
    /// After `-`, the dash indented by this much.
    SeqItem(usize),
}

impl At {
    /// Indentation of the entries of a collection written here.
    fn inner(self) -> usize {
        match self {
            At::Root => 0,
            At::MapValue(l) | At::SeqItem(l) => l + 2,
        }
    }
}

fn indent(out: &mut String, n: usize) {
    const SPACES: &str = "                                                                ";
    let mut n = n;
    while n > 0 {
        let k = n.min(SPACES.len());
        out.push_str(&SPACES[..k]);
        n -= k;
    }
}

struct Writer<'a> {
    out: &'a mut String,
    at: At,
}

impl<'a> Writer<'a> {
    fn scalar(self, f: impl FnOnce(&mut String)) -> Result<(), EmitError> {
        if !matches!(self.at, At::Root) {
            self.out.push(' ');
        }
        f(self.out);
        self.out.push('\n');
        Ok(())
    }

    fn compound(self, map: bool) -> Compound<'a> {
        Compound {
            inner: self.at.inner(),
            out: self.out,
            at: self.at,
            map,
            count: 0,
        }
    }
}

/// A map, struct or sequence being written.
struct Compound<'a> {
    out: &'a mut String,
    at: At,
    inner: usize,
    map: bool,
    count: usize,
}

impl Compound<'_> {
    /// Writes what stands before the next entry.
    fn before_entry(&mut self) {
        let first = self.count == 0;
        self.count += 1;
        match (first, self.at) {
            (true, At::Root) => {}
            (true, At::MapValue(_)) => {
                self.out.push('\n');
                indent(self.out, self.inner);
            }
            (true, At::SeqItem(_)) if self.map => self.out.push(' '),
            (true, At::SeqItem(_)) => {
                self.out.push('\n');
                indent(self.out, self.inner);
            }
            (false, _) => indent(self.out, self.inner),
        }
    }

    fn key(&mut self, key: &str) {
        self.before_entry();
        write_string(self.out, key);
        self.out.push(':');
    }

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EmitError> {
        value.serialize(Writer {
            out: self.out,
            at: At::MapValue(self.inner),
        })
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EmitError> {
        self.before_entry();
        self.out.push('-');
        value.serialize(Writer {
            out: self.out,
            at: At::SeqItem(self.inner),
        })
    }

    fn finish(self) -> Result<(), EmitError> {
        if self.count == 0 {
            if !matches!(self.at, At::Root) {
                self.out.push(' ');
            }
            self.out.push_str(if self.map { "{}\n" } else { "[]\n" });
        }
        Ok(())
    }
}

impl<'a> ser::Serializer for Writer<'a> {
    type Ok = ();
    type Error = EmitError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = ser::Impossible<(), EmitError>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = ser::Impossible<(), EmitError>;

    fn serialize_bool(self, v: bool) -> Result<(), EmitError> {
        self.scalar(|o| o.push_str(if v { "true" } else { "false" }))
    }
    fn serialize_i8(self, v: i8) -> Result<(), EmitError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<(), EmitError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<(), EmitError> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<(), EmitError> {
        self.scalar(|o| {
            let _ = write!(o, "{v}");
        })
    }
    fn serialize_u8(self, v: u8) -> Result<(), EmitError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<(), EmitError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<(), EmitError> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<(), EmitError> {
        self.scalar(|o| {
            let _ = write!(o, "{v}");
        })
    }
    fn serialize_f32(self, v: f32) -> Result<(), EmitError> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<(), EmitError> {
        // As JSON writes it; what has no JSON form (NaN, infinities) is null there too.
        self.scalar(|o| match serde_json::Number::from_f64(v) {
            Some(n) => {
                let _ = write!(o, "{n}");
            }
            None => o.push_str("null"),
        })
    }
    fn serialize_char(self, v: char) -> Result<(), EmitError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), EmitError> {
        self.scalar(|o| write_string(o, v))
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), EmitError> {
        Err(EmitError("raw bytes have no YAML form here".into()))
    }
    fn serialize_none(self) -> Result<(), EmitError> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EmitError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), EmitError> {
        self.scalar(|o| o.push_str("null"))
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), EmitError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<(), EmitError> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<(), EmitError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EmitError> {
        // `{variant: value}`, as JSON writes it.
        let mut map = self.compound(true);
        map.key(variant);
        map.value(value)?;
        map.finish()
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, EmitError> {
        Ok(self.compound(false))
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>, EmitError> {
        Ok(self.compound(false))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, EmitError> {
        Ok(self.compound(false))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, EmitError> {
        Err(EmitError(format!(
            "enum variant {variant} with fields has no YAML form here"
        )))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a>, EmitError> {
        Ok(self.compound(true))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, EmitError> {
        Ok(self.compound(true))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, EmitError> {
        Err(EmitError(format!(
            "enum variant {variant} with fields has no YAML form here"
        )))
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = EmitError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EmitError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EmitError> {
        self.finish()
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = EmitError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EmitError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EmitError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = EmitError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EmitError> {
        self.element(value)
    }
    fn end(self) -> Result<(), EmitError> {
        self.finish()
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = EmitError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EmitError> {
        let key = key.serialize(KeyWriter)?;
        self.key(&key);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EmitError> {
        self.value(value)
    }
    fn end(self) -> Result<(), EmitError> {
        self.finish()
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = EmitError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), EmitError> {
        self.key(key);
        self.value(value)
    }
    fn end(self) -> Result<(), EmitError> {
        self.finish()
    }
}

/// Map keys: strings, and scalars written as strings (as JSON does).
struct KeyWriter;

impl ser::Serializer for KeyWriter {
    type Ok = String;
    type Error = EmitError;
    type SerializeSeq = ser::Impossible<String, EmitError>;
    type SerializeTuple = ser::Impossible<String, EmitError>;
    type SerializeTupleStruct = ser::Impossible<String, EmitError>;
    type SerializeTupleVariant = ser::Impossible<String, EmitError>;
    type SerializeMap = ser::Impossible<String, EmitError>;
    type SerializeStruct = ser::Impossible<String, EmitError>;
    type SerializeStructVariant = ser::Impossible<String, EmitError>;

    fn serialize_bool(self, v: bool) -> Result<String, EmitError> {
        Ok(v.to_string())
    }
    fn serialize_i8(self, v: i8) -> Result<String, EmitError> {
        Ok(v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<String, EmitError> {
        Ok(v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<String, EmitError> {
        Ok(v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<String, EmitError> {
        Ok(v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<String, EmitError> {
        Ok(v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<String, EmitError> {
        Ok(v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<String, EmitError> {
        Ok(v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<String, EmitError> {
        Ok(v.to_string())
    }
    fn serialize_f32(self, _: f32) -> Result<String, EmitError> {
        Err(not_a_key())
    }
    fn serialize_f64(self, _: f64) -> Result<String, EmitError> {
        Err(not_a_key())
    }
    fn serialize_char(self, v: char) -> Result<String, EmitError> {
        Ok(v.to_string())
    }
    fn serialize_str(self, v: &str) -> Result<String, EmitError> {
        Ok(v.to_owned())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, EmitError> {
        Err(not_a_key())
    }
    fn serialize_none(self) -> Result<String, EmitError> {
        Err(not_a_key())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<String, EmitError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<String, EmitError> {
        Err(not_a_key())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, EmitError> {
        Err(not_a_key())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<String, EmitError> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<String, EmitError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, EmitError> {
        Err(not_a_key())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, EmitError> {
        Err(not_a_key())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, EmitError> {
        Err(not_a_key())
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, EmitError> {
        Err(not_a_key())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, EmitError> {
        Err(not_a_key())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, EmitError> {
        Err(not_a_key())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, EmitError> {
        Err(not_a_key())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, EmitError> {
        Err(not_a_key())
    }
}

fn not_a_key() -> EmitError {
    EmitError("a map key must be a string, an integer or a boolean".into())
}

/// A string plain when that reads back as the same string, else double-quoted.
fn write_string(out: &mut String, s: &str) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else {
        push_quoted(out, s);
    }
}

/// Bytes that may stand anywhere in a plain scalar written here (`:` and space are checked apart).
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'_' | b'.' | b'/' | b'@' | b'+' | b'=' | b',' | b'(' | b')' | b'*'
            );
        b += 1;
    }
    t
};

fn is_plain_safe(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(&first) = bytes.first() else { return false };
    if !(first.is_ascii_alphanumeric() || matches!(first, b'/' | b'.' | b'_')) {
        return false;
    }
    let mut prev = 0u8;
    for &b in bytes {
        let ok = PLAIN[usize::from(b)]
            || (b == b':' && prev != b' ')
            // ": " starts a mapping value: it stays quoted.
            || (b == b' ' && prev != b':');
        if !ok {
            return false;
        }
        prev = b;
    }
    if matches!(prev, b' ' | b':') {
        return false;
    }
    // Only these first characters can start a null, a boolean or a number; of those starting with a
    // letter only nulls and booleans remain, none longer than five characters.
    let maybe_other = matches!(
        first,
        b'0'..=b'9' | b'.' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'y' | b'Y' | b'o' | b'O'
    );
    !maybe_other
        || (first.is_ascii_alphabetic() && bytes.len() > 5)
        || (plain_is_string(s) && !yaml_1_1_number_or_time(bytes))
}

/// Whether YAML 1.1 parsers (the kube-apiserver's and kubectl's among them) may read a plain scalar starting
/// with a digit or a dot as a number or a timestamp where YAML 1.2 reads a string: digits grouped with `_`
/// (`1_000`), binary (`0b101`), base 60 (`1:20`, `190:20:30.5`) and dates (`2001-12-14`).
fn yaml_1_1_number_or_time(bytes: &[u8]) -> bool {
    let date = bytes.len() >= 8 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-';
    date || bytes.starts_with(b"0b") || bytes.starts_with(b"0B") || bytes.iter().any(|b| matches!(b, b'_' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;
    use serde_json::json;

    fn round_trip(v: &serde_json::Value) -> serde_json::Value {
        let text = to_yaml(v).expect("writes");
        let docs = yaml::parse(&text, &yaml::Limits::default()).expect("emitted YAML parses");
        docs.first().map_or(serde_json::Value::Null, |d| d.root.to_json())
    }

    #[test]
    fn writes_block_yaml_that_reads_back() {
        let v = json!({
            "apiVersion": "apps/v1",
            "metadata": {"labels": {"app.kubernetes.io/name": "x"}, "annotations": {}},
            "spec": {"replicas": 3, "ratio": 0.25, "list": [{"a": 1, "b": [1, 2]}, "s", [], {}, [[1], {"c": null}]], "flags": ["yes", "no", "on", "1", "1.5", "null", "~", "", "a: b", "a:b", "#x", "a #x", " lead", "trail ", "é", "0x1F", ".inf", "Off", "nope", "true1"]}
        });
        assert_eq!(round_trip(&v), v);
        let text = to_yaml(&v).expect("writes");
        assert!(text.starts_with("apiVersion: apps/v1\n"), "{text}");
        assert!(text.contains("\n  annotations: {}\n"), "{text}");
        assert!(text.contains("\n    - a: 1\n      b:\n        - 1\n"), "{text}");
    }

    #[test]
    fn typed_objects_print_as_their_json_reads() {
        use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};
        let pod = PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("ghcr.io/acme/app:1.0".into()),
                ports: Some(vec![ContainerPort {
                    container_port: 8080,
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        };
        let json = serde_json::to_value(&pod).expect("json");
        assert_eq!(round_trip(&json), json);
        let docs = yaml::parse(&to_yaml(&pod).expect("writes"), &yaml::Limits::default()).expect("parses");
        assert_eq!(docs[0].root.to_json(), json);
    }

    #[test]
    fn strings_written_plain_read_back_as_the_same_strings() {
        for s in [
            "null",
            "Null",
            "nullable",
            "true",
            "trueish",
            "True1",
            "off",
            "offset",
            "Off",
            "yes",
            "yesterday",
            "n",
            "N",
            "no",
            "none",
            "False",
            "FALSE",
            "falsehood",
            "on",
            "One",
            "0x1F",
            "0o7",
            "017",
            "1e5",
            "1.5",
            ".5",
            ".inf",
            ".NaN",
            "inf",
            "nan",
            "Infinity",
            "a: b",
            "a:b",
            "name",
            "namespace",
        ] {
            let v = json!({ "k": s, s: 1 });
            assert_eq!(round_trip(&v), v, "{s:?}");
        }
    }

    #[test]
    fn strings_yaml_1_1_reads_as_numbers_or_dates_are_quoted() {
        for s in [
            "1_000",
            "0b101",
            "0B1",
            "1:20",
            "190:20:30",
            "190:20:30.15",
            "2001-12-14",
            "2001-12-14t21:59:43.10-05:00",
            "1_0.5",
            ".5_0",
            "0_1",
        ] {
            let text = to_yaml(&json!({ "k": s, s: 1 })).expect("writes");
            assert_eq!(text.matches('"').count(), 4, "{s:?} in {text}");
            assert_eq!(round_trip(&json!({ "k": s })), json!({ "k": s }));
        }
        for s in ["1.4.2", "250m", "1Gi", "10.0.0.1", "2001-12", "8080"] {
            let text = to_yaml(&json!({ "k": s })).expect("writes");
            assert_eq!(round_trip(&json!({ "k": s })), json!({ "k": s }), "{s:?} in {text}");
        }
    }

    #[test]
    fn streams_and_scalar_roots() {
        let text = to_yaml_stream([&json!({"a": 1}), &json!([]), &json!("s")]).expect("writes");
        assert_eq!(text, "---\na: 1\n---\n[]\n---\ns\n");
    }
}
