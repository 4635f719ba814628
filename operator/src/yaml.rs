//! YAML documents with positions: every node keeps its line and column, so errors point at `file:line:col`.
//!
//! Scalars resolve as Kubernetes clients resolve them (YAML 1.1 booleans such as `yes` and `on` included),
//! so a document means here what it means to `kubectl`. Duplicate keys, unknown tags, alias bombs,
//! excessive nesting and oversized input are errors, never panics or unbounded work.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// A position in a text: 1-based line and 1-based column, counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1, in characters.
    pub col: u32,
}

impl Pos {
    /// A position from 1-based line and column.
    pub const fn new(line: u32, col: u32) -> Pos {
        Pos { line, col }
    }

    fn from_marker(m: &saphyr_parser::Marker) -> Pos {
        let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Pos {
            line: clamp(m.line()),
            col: clamp(m.col()).saturating_add(1),
        }
    }

    /// The byte offset of this position in `text`, for diagnostics that need one.
    pub fn byte_offset(self, text: &str) -> usize {
        let mut offset = 0;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            if i + 1 == self.line as usize {
                let col = (self.col as usize).saturating_sub(1);
                return offset + line.char_indices().nth(col).map_or(line.len(), |(b, _)| b);
            }
            offset += line.len();
        }
        text.len()
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A range of a text, start inclusive, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Span {
    /// Where the node starts.
    pub start: Pos,
    /// Where the node ends.
    pub end: Pos,
}

/// A YAML node and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the value stands.
    pub span: Span,
}

/// A mapping key (always a string, as in JSON) and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key.
    pub name: String,
    /// Where the key stands.
    pub span: Span,
}

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true`, `false` (and YAML 1.1's `yes`, `no`, `on`, `off`).
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// The JSON type name of this value, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Seq(_) => "array",
            Value::Map(_) => "object",
        }
    }
}

/// One document of a YAML stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Index of the document in its stream, from 0.
    pub index: usize,
    /// The root node.
    pub root: Node,
}

/// Bounds on what one parse may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest input, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of sequences and mappings.
    pub max_depth: usize,
    /// Most nodes in one document, counting each alias expansion in full.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // The apiserver refuses requests over 3 MiB; nothing Plinth reads needs more.
        Limits {
            max_bytes: 3 * 1024 * 1024,
            max_depth: 64,
            max_nodes: 200_000,
        }
    }
}

/// Why a YAML text could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum YamlError {
    /// The text is not YAML.
    #[error("YAML syntax error: {message}")]
    Syntax {
        /// Where the parser stopped.
        pos: Pos,
        /// What the parser expected.
        message: String,
    },
    /// A mapping has the same key twice.
    #[error("duplicate key `{key}` (first at line {}); remove one of them", first.line)]
    DuplicateKey {
        /// The key.
        key: String,
        /// Where the second key stands.
        pos: Pos,
        /// Where the first key stands.
        first: Pos,
    },
    /// A mapping key is a sequence or mapping.
    #[error("a mapping key must be a plain value, not a sequence or mapping")]
    ComplexKey {
        /// Where the key stands.
        pos: Pos,
    },
    /// An unsupported tag such as `!custom`.
    #[error("unsupported tag `{tag}`; Kubernetes manifests use no tags, remove it")]
    Tag {
        /// Where the tag stands.
        pos: Pos,
        /// The tag.
        tag: String,
    },
    /// A tagged scalar does not fit its tag.
    #[error("`{text}` is not a valid {tag}")]
    TagMismatch {
        /// Where the scalar stands.
        pos: Pos,
        /// The tag.
        tag: String,
        /// The scalar.
        text: String,
    },
    /// Nesting deeper than the limit.
    #[error("nesting deeper than {limit} levels; flatten the document")]
    TooDeep {
        /// Where the limit was crossed.
        pos: Pos,
        /// The limit.
        limit: usize,
    },
    /// More nodes than the limit, usually aliases expanding exponentially (a "YAML bomb").
    #[error("document expands to more than {limit} nodes (aliases expanding exponentially?); refusing to read it")]
    TooManyNodes {
        /// Where the limit was crossed.
        pos: Pos,
        /// The limit.
        limit: usize,
    },
    /// The input is larger than the limit.
    #[error("input is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// The input's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl YamlError {
    /// Where the error stands.
    pub fn pos(&self) -> Pos {
        match self {
            YamlError::Syntax { pos, .. }
            | YamlError::DuplicateKey { pos, .. }
            | YamlError::ComplexKey { pos }
            | YamlError::Tag { pos, .. }
            | YamlError::TagMismatch { pos, .. }
            | YamlError::TooDeep { pos, .. }
            | YamlError::TooManyNodes { pos, .. } => *pos,
            YamlError::TooLarge { .. } => Pos::new(1, 1),
        }
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        start: Pos,
        anchor: usize,
        nodes: usize,
    },
    Map {
        entries: Vec<(Key, Node)>,
        pending: Option<Key>,
        start: Pos,
        anchor: usize,
        nodes: usize,
        seen: Option<HashMap<String, Pos>>,
    },
}

/// Parses every document of a YAML stream. Empty documents are left out.
pub fn parse(text: &str, limits: &Limits) -> Result<Vec<Document>, YamlError> {
    if text.len() > limits.max_bytes {
        return Err(YamlError::TooLarge {
            size: text.len(),
            limit: limits.max_bytes,
        });
    }
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    // Anchored nodes with their size in nodes, so an alias's cost is known before it is copied.
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut doc_nodes = 0usize;
    let mut doc_index = 0usize;
    let mut root: Option<Node> = None;

    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlError::Syntax {
            pos: Pos::from_marker(e.marker()),
            message: e.info().to_owned(),
        })?;
        let start = Pos::from_marker(&span.start);
        let end = Pos::from_marker(&span.end);
        let (node, size, anchor) = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                anchors.clear();
                doc_nodes = 0;
                root = None;
                continue;
            }
            Event::DocumentEnd => {
                if let Some(r) = root.take()
                    && !matches!(r.value, Value::Null)
                {
                    docs.push(Document {
                        index: doc_index,
                        root: r,
                    });
                }
                doc_index += 1;
                continue;
            }
            Event::SequenceStart(anchor, tag) => {
                open_collection(&stack, tag.as_deref(), "seq", start, limits)?;
                stack.push(Frame::Seq {
                    items: Vec::new(),
                    start,
                    anchor,
                    nodes: 1,
                });
                continue;
            }
            Event::MappingStart(anchor, tag) => {
                open_collection(&stack, tag.as_deref(), "map", start, limits)?;
                stack.push(Frame::Map {
                    entries: Vec::new(),
                    pending: None,
                    start,
                    anchor,
                    nodes: 1,
                    seen: None,
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    items,
                    start,
                    anchor,
                    nodes,
                }) => (
                    Node {
                        value: Value::Seq(items),
                        span: Span { start, end },
                    },
                    nodes,
                    anchor,
                ),
                _ => {
                    return Err(YamlError::Syntax {
                        pos: start,
                        message: "unbalanced sequence".into(),
                    });
                }
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    entries,
                    start,
                    anchor,
                    nodes,
                    ..
                }) => (
                    Node {
                        value: Value::Map(entries),
                        span: Span { start, end },
                    },
                    nodes,
                    anchor,
                ),
                _ => {
                    return Err(YamlError::Syntax {
                        pos: start,
                        message: "unbalanced mapping".into(),
                    });
                }
            },
            Event::Scalar(text, style, anchor, tag) => {
                let value = resolve_scalar(&text, style, tag.as_deref(), start)?;
                (
                    Node {
                        value,
                        span: Span { start, end },
                    },
                    1,
                    anchor,
                )
            }
            Event::Alias(id) => {
                let Some((node, size)) = anchors.get(&id) else {
                    return Err(YamlError::Syntax {
                        pos: start,
                        message: "alias to an unknown anchor".into(),
                    });
                };
                if doc_nodes.saturating_add(*size) > limits.max_nodes {
                    return Err(YamlError::TooManyNodes {
                        pos: start,
                        limit: limits.max_nodes,
                    });
                }
                let mut copy = node.clone();
                copy.span = Span { start, end };
                (copy, *size, 0)
            }
        };
        doc_nodes = doc_nodes.saturating_add(if size == 1 { 1 } else { 0 });
        if doc_nodes > limits.max_nodes {
            return Err(YamlError::TooManyNodes {
                pos: start,
                limit: limits.max_nodes,
            });
        }
        if anchor != 0 {
            anchors.insert(anchor, (node.clone(), size));
        }
        attach(&mut stack, &mut root, node, size)?;
    }
    Ok(docs)
}

fn attach(stack: &mut [Frame], root: &mut Option<Node>, node: Node, size: usize) -> Result<(), YamlError> {
    match stack.last_mut() {
        None => *root = Some(node),
        Some(Frame::Seq { items, nodes, .. }) => {
            *nodes = nodes.saturating_add(size);
            items.push(node);
        }
        Some(Frame::Map {
            entries,
            pending,
            nodes,
            seen,
            ..
        }) => {
            *nodes = nodes.saturating_add(size);
            match pending.take() {
                Some(key) => entries.push((key, node)),
                None => {
                    let name = match node.value {
                        Value::Str(s) => s,
                        Value::Null => "null".to_owned(),
                        Value::Bool(b) => b.to_string(),
                        Value::Int(i) => i.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(YamlError::ComplexKey { pos: node.span.start });
                        }
                    };
                    // Small mappings (nearly all) are scanned; large ones get an index, so no input is quadratic.
                    let first = match seen {
                        Some(index) => index.get(&name).copied(),
                        None => entries.iter().find(|(k, _)| k.name == name).map(|(k, _)| k.span.start),
                    };
                    if let Some(first) = first {
                        return Err(YamlError::DuplicateKey {
                            key: name,
                            pos: node.span.start,
                            first,
                        });
                    }
                    if let Some(index) = seen {
                        index.insert(name.clone(), node.span.start);
                    } else if entries.len() >= 32 {
                        let mut index: HashMap<String, Pos> =
                            entries.iter().map(|(k, _)| (k.name.clone(), k.span.start)).collect();
                        index.insert(name.clone(), node.span.start);
                        *seen = Some(index);
                    }
                    *pending = Some(Key { name, span: node.span });
                }
            }
        }
    }
    Ok(())
}

/// Checks a sequence or mapping about to open: its tag and the nesting limit.
fn open_collection(
    stack: &[Frame],
    tag: Option<&saphyr_parser::Tag>,
    expected: &str,
    pos: Pos,
    limits: &Limits,
) -> Result<(), YamlError> {
    check_collection_tag(tag, expected, pos)?;
    if stack.len() >= limits.max_depth {
        return Err(YamlError::TooDeep {
            pos,
            limit: limits.max_depth,
        });
    }
    Ok(())
}

fn check_collection_tag(tag: Option<&saphyr_parser::Tag>, expected: &str, pos: Pos) -> Result<(), YamlError> {
    match tag {
        None => Ok(()),
        Some(t) if t.handle == "tag:yaml.org,2002:" && t.suffix == expected => Ok(()),
        Some(t) => Err(YamlError::Tag {
            pos,
            tag: format!("{}{}", t.handle, t.suffix),
        }),
    }
}

fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&saphyr_parser::Tag>,
    pos: Pos,
) -> Result<Value, YamlError> {
    if let Some(t) = tag {
        if t.handle == "!" && t.suffix.is_empty() {
            return Ok(Value::Str(text.to_owned()));
        }
        if t.handle != "tag:yaml.org,2002:" {
            return Err(YamlError::Tag {
                pos,
                tag: format!("{}{}", t.handle, t.suffix),
            });
        }
        let mismatch = || YamlError::TagMismatch {
            pos,
            tag: format!("!!{}", t.suffix),
            text: text.to_owned(),
        };
        return match t.suffix.as_str() {
            "str" => Ok(Value::Str(text.to_owned())),
            "null" => Ok(Value::Null),
            "bool" => resolve_bool(text).map(Value::Bool).ok_or_else(mismatch),
            "int" => resolve_int(text).map(Value::Int).ok_or_else(mismatch),
            "float" => resolve_float(text)
                .or_else(|| resolve_int(text).map(|i| i as f64))
                .map(Value::Float)
                .ok_or_else(mismatch),
            other => Err(YamlError::Tag {
                pos,
                tag: format!("!!{other}"),
            }),
        };
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str(text.to_owned()));
    }
    Ok(resolve_plain(text))
}

/// Resolves a plain (unquoted) scalar as Kubernetes clients do.
pub fn resolve_plain(text: &str) -> Value {
    resolve_non_string(text).unwrap_or_else(|| Value::Str(text.to_owned()))
}

/// Whether a plain (unquoted) scalar reads back as the string it is.
pub fn plain_is_string(text: &str) -> bool {
    resolve_non_string(text).is_none()
}

fn resolve_non_string(text: &str) -> Option<Value> {
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Some(Value::Null);
    }
    if let Some(b) = resolve_bool(text) {
        return Some(Value::Bool(b));
    }
    if let Some(i) = resolve_int(text) {
        return Some(Value::Int(i));
    }
    resolve_float(text).map(Value::Float)
}

fn resolve_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => Some(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => Some(false),
        _ => None,
    }
}

fn resolve_int(text: &str) -> Option<i64> {
    let (neg, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let (radix, body) = if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o") {
        (8, o)
    } else if digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()) {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i64::from_str_radix(body, radix).ok()?;
    Some(if neg { -v } else { v })
}

fn resolve_float(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    match unsigned {
        ".inf" | ".Inf" | ".INF" => {
            return Some(if text.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            });
        }
        ".nan" | ".NaN" | ".NAN" if unsigned.len() == text.len() => return Some(f64::NAN),
        _ => {}
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => {
            (!a.is_empty() || !b.is_empty())
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|c| c.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let d = e.strip_prefix(['-', '+']).unwrap_or(e);
        !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit())
    });
    if mantissa_ok && exponent_ok {
        text.parse().ok()
    } else {
        None
    }
}

impl Node {
    /// The value as JSON, the form Kubernetes objects take.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => serde_json::Value::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => {
                serde_json::Value::Object(entries.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect())
            }
        }
    }

    /// The value as JSON, consuming the node (no string is copied).
    pub fn into_json(self) -> serde_json::Value {
        match self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(b),
            Value::Int(i) => serde_json::Value::from(i),
            Value::Float(f) => {
                serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::Str(s) => serde_json::Value::String(s),
            Value::Seq(items) => serde_json::Value::Array(items.into_iter().map(Node::into_json).collect()),
            Value::Map(entries) => {
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k.name, v.into_json())).collect())
            }
        }
    }

    /// The value at `key`, when this node is a mapping holding it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key and value at `key`, when this node is a mapping holding it.
    pub fn entry(&self, key: &str) -> Option<(&Key, &Node)> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The string value, when this node is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The position that best shows `path` (segments are keys or decimal indexes): the node at the path,
    /// or, for a missing key, the deepest node that exists on the way.
    pub fn locate<'a, I>(&self, path: I) -> Span
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut node = self;
        for seg in path {
            let next = match &node.value {
                Value::Map(entries) => entries.iter().find(|(k, _)| k.name == seg).map(|(_, v)| v),
                Value::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return node.span,
            }
        }
        node.span
    }

    /// The span of the key `path`'s last segment names, when the path ends at a mapping entry.
    pub fn locate_key<'a, I>(&self, path: I) -> Option<Span>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let segs: Vec<&str> = path.into_iter().collect();
        let (last, parents) = segs.split_last()?;
        let mut node = self;
        for seg in parents {
            node = match &node.value {
                Value::Map(entries) => entries.iter().find(|(k, _)| k.name == *seg).map(|(_, v)| v)?,
                Value::Seq(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        node.entry(last).map(|(k, _)| k.span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let mut docs = parse(text, &Limits::default()).expect("parses");
        assert_eq!(docs.len(), 1);
        docs.remove(0).root
    }

    #[test]
    fn keeps_positions_of_nodes_and_keys() {
        let root = one("apiVersion: v1\nspec:\n  image: nginx:1\n  port: 80\n");
        let port = root.locate(["spec", "port"]);
        assert_eq!(port.start, Pos::new(4, 9));
        let key = root.locate_key(["spec", "image"]).expect("key");
        assert_eq!(key.start, Pos::new(3, 3));
        // A missing key points at its parent.
        assert_eq!(root.locate(["spec", "nope"]).start.line, 3);
    }

    #[test]
    fn resolves_scalars_like_kubectl() {
        let root = one("a: yes\nb: '1'\nc: 1\nd: 1.5\ne: ~\nf: \"on\"\ng: 0x1f\nh: 1e3\ni: 12abc\n");
        let j = root.to_json();
        assert_eq!(
            j,
            serde_json::json!({"a": true, "b": "1", "c": 1, "d": 1.5, "e": null, "f": "on", "g": 31, "h": 1000.0, "i": "12abc"})
        );
    }

    #[test]
    fn refuses_duplicate_keys_with_both_positions() {
        let err = parse("a: 1\nb: 2\na: 3\n", &Limits::default()).expect_err("duplicate");
        assert_eq!(
            err,
            YamlError::DuplicateKey {
                key: "a".into(),
                pos: Pos::new(3, 1),
                first: Pos::new(1, 1)
            }
        );
    }

    #[test]
    fn stops_alias_bombs() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..12 {
            let prev = if i == 0 { "a".to_owned() } else { format!("l{}", i - 1) };
            bomb.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let err = parse(&bomb, &Limits::default()).expect_err("bomb");
        assert!(matches!(err, YamlError::TooManyNodes { .. }), "{err:?}");
    }

    #[test]
    fn stops_deep_nesting() {
        let deep = "[".repeat(10_000);
        let err = parse(&deep, &Limits::default()).expect_err("deep");
        assert!(
            matches!(err, YamlError::TooDeep { .. } | YamlError::Syntax { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let err = parse("a: [1, 2\nb: 3\n", &Limits::default()).expect_err("syntax");
        assert!(matches!(err, YamlError::Syntax { .. }));
        assert!(err.pos().line >= 1);
    }

    #[test]
    fn splits_documents_and_skips_empty_ones() {
        let docs = parse("---\na: 1\n---\n---\nb: 2\n", &Limits::default()).expect("parses");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].index, 2);
    }

    #[test]
    fn byte_offsets_count_characters() {
        let text = "a: é\nb: x\n";
        assert_eq!(Pos::new(2, 4).byte_offset(text), text.find('x').expect("x"));
        assert_eq!(Pos::new(1, 4).byte_offset(text), 3);
    }
}
