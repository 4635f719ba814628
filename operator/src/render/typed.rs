//! Typed objects decoded straight from a parsed skeleton and its slots, without building JSON values first.
//!
//! A `serde` deserializer walks the skeleton (see [`super::slots`]) and reads each slot's value where the
//! skeleton holds its token. It is the fast path of a render and it only ever says yes: any unknown field, a
//! type error, a value key that is not a string or a repeated key makes it give up, and the caller decodes
//! the filled JSON the careful way, which names every unknown field and the path of a type error. On
//! success both ways give the same object: keys and values are read exactly as the filled JSON holds them.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::objects::Object;
use super::slots::{Key, Node};

/// The fast path gave up; the careful decoder says why.
#[derive(Debug)]
pub(crate) struct GaveUp;

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the typed decoder gave up")
    }
}

impl std::error::Error for GaveUp {}

impl de::Error for GaveUp {
    // The message is never shown (the careful decoder writes its own), so it is not even formatted.
    fn custom<T: fmt::Display>(_: T) -> Self {
        GaveUp
    }
}

/// The object one skeleton document describes with `slots` in place, or `None` when it must be decoded the
/// careful way (not an allowed kind, an unknown field, a type error, a bad or repeated key).
pub(crate) fn object(doc: &Node, slots: &[&Value]) -> Option<Object> {
    let Node::Map(entries) = doc else { return None };
    let mut api_version = None;
    let mut kind = None;
    for (key, value) in entries {
        let field = match key {
            Key::Name(k) => k.as_str(),
            Key::Slot(n) => slot(slots, *n).as_str()?,
        };
        let text = || match value {
            Node::Leaf(Value::String(s)) => Some(s.as_str()),
            Node::Slot(n) => slot(slots, *n).as_str(),
            _ => None,
        };
        match field {
            "apiVersion" => api_version = Some(text()?),
            "kind" => kind = Some(text()?),
            _ => {}
        }
    }
    let ignored = Cell::new(false);
    let de = De {
        src: Src::Node(doc),
        slots,
        ignored: &ignored,
    };
    match Object::decode(api_version?, kind?, de)? {
        Ok(o) if !ignored.get() => Some(o),
        _ => None,
    }
}

static NULL: Value = Value::Null;

/// A slot's value; a slot the render did not fill reads as null, as [`super::slots::Skeleton::fill`] has it.
fn slot<'v>(slots: &[&'v Value], n: usize) -> &'v Value {
    slots.get(n).copied().unwrap_or(&NULL)
}

/// Where a value comes from: the skeleton, or a slot's JSON value (or a part of one).
#[derive(Clone, Copy)]
enum Src<'de> {
    Node(&'de Node),
    Json(&'de Value),
}

struct De<'de> {
    src: Src<'de>,
    slots: &'de [&'de Value],
    /// Set when the target type skips a field it does not know.
    ignored: &'de Cell<bool>,
}

impl<'de> De<'de> {
    fn at(&self, src: Src<'de>) -> De<'de> {
        De {
            src,
            slots: self.slots,
            ignored: self.ignored,
        }
    }

    /// The JSON value here, when it is one (a leaf, a slot or a part of a slot's value).
    fn json(&self) -> Option<&'de Value> {
        match self.src {
            Src::Json(v) | Src::Node(Node::Leaf(v)) => Some(v),
            Src::Node(Node::Slot(n)) => Some(slot(self.slots, *n)),
            Src::Node(Node::Seq(_) | Node::Map(_)) => None,
        }
    }
}

/// Reads a JSON value as serde_json's own deserializer of `&Value` does.
fn visit_json<'de, V: Visitor<'de>>(de: &De<'de>, v: &'de Value, visitor: V) -> Result<V::Value, GaveUp> {
    match v {
        Value::Null => visitor.visit_unit(),
        Value::Bool(b) => visitor.visit_bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                visitor.visit_u64(u)
            } else if let Some(i) = n.as_i64() {
                visitor.visit_i64(i)
            } else {
                visitor.visit_f64(n.as_f64().ok_or(GaveUp)?)
            }
        }
        Value::String(s) => visitor.visit_borrowed_str(s),
        Value::Array(items) => visitor.visit_seq(Seq {
            items: items.iter().map(Src::Json),
            de: de.at(Src::Json(v)),
        }),
        Value::Object(map) => visitor.visit_map(Map {
            entries: map.iter().map(|(k, v)| (k.as_str(), Src::Json(v))),
            value: None,
            de: de.at(Src::Json(v)),
        }),
    }
}

/// The entries of a skeleton mapping with slot keys resolved, or `None` when a slot key is not a string or
/// a key repeats (the YAML parser refuses repeated keys in the text; only values can repeat one).
fn map_entries<'de>(entries: &'de [(Key, Node)], slots: &'de [&'de Value]) -> Option<Vec<(&'de str, Src<'de>)>> {
    let mut out = Vec::with_capacity(entries.len());
    let mut from_slots = false;
    for (key, value) in entries {
        let name = match key {
            Key::Name(k) => k.as_str(),
            Key::Slot(n) => {
                from_slots = true;
                slot(slots, *n).as_str()?
            }
        };
        out.push((name, Src::Node(value)));
    }
    if from_slots {
        for (i, (k, _)) in out.iter().enumerate() {
            if out[..i].iter().any(|(seen, _)| seen == k) {
                return None;
            }
        }
    }
    Some(out)
}

impl<'de> Deserializer<'de> for De<'de> {
    type Error = GaveUp;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GaveUp> {
        if let Some(v) = self.json() {
            return visit_json(&self, v, visitor);
        }
        match self.src {
            Src::Node(Node::Seq(items)) => visitor.visit_seq(Seq {
                items: items.iter().map(Src::Node),
                de: self.at(self.src),
            }),
            Src::Node(Node::Map(entries)) if entries.iter().all(|(k, _)| matches!(k, Key::Name(_))) => visitor
                .visit_map(Map {
                    entries: entries.iter().map(|(k, v)| (key_name(k), Src::Node(v))),
                    value: None,
                    de: self.at(self.src),
                }),
            Src::Node(Node::Map(entries)) => {
                let resolved = map_entries(entries, self.slots).ok_or(GaveUp)?;
                visitor.visit_map(Map {
                    entries: resolved.into_iter(),
                    value: None,
                    de: self.at(self.src),
                })
            }
            _ => Err(GaveUp),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GaveUp> {
        match self.json() {
            Some(Value::Null) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, GaveUp> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, GaveUp> {
        // No kind Plinth renders has one; the careful decoder handles it if one ever does.
        Err(GaveUp)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GaveUp> {
        self.ignored.set(true);
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

fn key_name(k: &Key) -> &str {
    match k {
        Key::Name(k) => k,
        // Only maps without slot keys take this way.
        Key::Slot(_) => "",
    }
}

struct Seq<'de, I> {
    items: I,
    de: De<'de>,
}

impl<'de, I: ExactSizeIterator<Item = Src<'de>>> SeqAccess<'de> for Seq<'de, I> {
    type Error = GaveUp;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, GaveUp> {
        match self.items.next() {
            Some(src) => seed.deserialize(self.de.at(src)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'de, I> {
    entries: I,
    value: Option<Src<'de>>,
    de: De<'de>,
}

impl<'de, I: ExactSizeIterator<Item = (&'de str, Src<'de>)>> MapAccess<'de> for Map<'de, I> {
    type Error = GaveUp;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, GaveUp> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(de::value::BorrowedStrDeserializer::new(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, GaveUp> {
        let src = self.value.take().ok_or(GaveUp)?;
        seed.deserialize(self.de.at(src))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::slots::{Recording, Skeleton, record};
    use crate::yaml::Limits;
    use serde_json::json;

    /// Renders `text_with` (which prints values through `p`) into a skeleton and its slots.
    fn skeleton(text_with: impl Fn(&mut dyn FnMut(Value) -> String) -> String) -> (Skeleton, Vec<Value>) {
        let rec = Recording::start();
        let text = text_with(&mut |v| record(|| v).expect("recording"));
        let root = Value::Null;
        let slots = crate::render::slots::resolve(&rec.finish(), &root)
            .into_iter()
            .cloned()
            .collect();
        (Skeleton::parse(&text, &Limits::default()).expect("parses"), slots)
    }

    /// The careful way: fill as JSON, then decode with unknown fields tracked.
    fn careful(skel: &Skeleton, slots: &[Value]) -> Option<Object> {
        let refs: Vec<&Value> = slots.iter().collect();
        let json = Skeleton::fill_doc(&skel.docs()[0], &refs).ok()?;
        let api_version = json.get("apiVersion")?.as_str()?.to_owned();
        let kind = json.get("kind")?.as_str()?.to_owned();
        let mut ignored = Vec::new();
        let o = Object::from_json(&api_version, &kind, json, &mut ignored)?.ok()?;
        ignored.is_empty().then_some(o)
    }

    #[test]
    fn the_fast_path_gives_the_careful_paths_object_whatever_the_values_hold() {
        let hostile = "x\nhostNetwork: true\n\"{{evil}}\": : # &a *a";
        let (skel, slots) = skeleton(|p| {
            format!(
                "apiVersion: {}\nkind: Deployment\nmetadata:\n  name: {}\n  labels:\n    {}: {}\nspec:\n  replicas: {}\n  selector:\n    matchLabels: {}\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {}\n          env: {}\n          ports: {}\n",
                p(json!("apps/v1")),
                p(json!("web")),
                p(json!("a/b")),
                p(json!(hostile)),
                p(json!(3)),
                p(json!({"app": hostile})),
                p(json!(hostile)),
                p(json!([{"name": "A", "value": hostile}])),
                p(json!([{"containerPort": 8080, "protocol": "TCP"}])),
            )
        });
        let fast = object(&skel.docs()[0], &slots.iter().collect::<Vec<_>>()).expect("decodes");
        assert_eq!(Some(&fast), careful(&skel, &slots).as_ref());
        let json = fast.to_json();
        assert_eq!(json.pointer("/metadata/labels/a~1b"), Some(&json!(hostile)));
        assert_eq!(
            json.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!(hostile))
        );
    }

    #[test]
    fn the_fast_path_leaves_every_doubt_to_the_careful_path() {
        let cases: Vec<(Skeleton, Vec<Value>)> = vec![
            // An unknown field in the text, and in a slot's value.
            skeleton(|_| "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\nspecs: {}\n".into()),
            skeleton(|p| {
                format!(
                    "apiVersion: v1\nkind: ServiceAccount\nmetadata: {}\n",
                    p(json!({"name": "a", "nmae": "b"}))
                )
            }),
            // A type error.
            skeleton(|p| {
                format!(
                    "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {}\n",
                    p(json!(7))
                )
            }),
            // A key from a value that repeats a key, and one that is not a string.
            skeleton(|p| {
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  x: \"1\"\n  {}: \"2\"\n",
                    p(json!("x"))
                )
            }),
            skeleton(|p| {
                format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  {}: \"2\"\n",
                    p(json!(1))
                )
            }),
            // A kind Plinth does not render, and no kind.
            skeleton(|_| "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\n".into()),
            skeleton(|_| "apiVersion: v1\nmetadata:\n  name: a\n".into()),
        ];
        for (i, (skel, slots)) in cases.iter().enumerate() {
            assert_eq!(
                object(&skel.docs()[0], &slots.iter().collect::<Vec<_>>()),
                None,
                "case {i}"
            );
        }
        // A key from a value that is new is fine.
        let (skel, slots) = skeleton(|p| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  x: \"1\"\n  {}: \"2\"\n",
                p(json!("y"))
            )
        });
        let fast = object(&skel.docs()[0], &slots.iter().collect::<Vec<_>>()).expect("decodes");
        assert_eq!(Some(fast), careful(&skel, &slots));
    }
}
