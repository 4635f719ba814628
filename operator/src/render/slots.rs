//! Printed values travel beside the template's text, never through the YAML parser.
//!
//! While a template renders, every value it prints (`{{x}}` through the escape function, `{{json x}}`) is kept
//! in a slot, and the text gets a token in its place: the double-quoted scalar `"\u{E000}N\u{E001}"` for slot
//! `N`. What remains of the text is the template's own structure, the *skeleton*, and it is the same for every
//! Application that takes the same `{{#if}}`/`{{#each}}` branches. A skeleton is parsed once and kept (see
//! [`Skeletons`]); each render then fills its slots into the parsed tree. A value `{{json x}}` reads from the
//! template context is kept as where it stands there ([`Recorded::At`]) and read back from the same context
//! after the render ([`resolve`]), rather than copied.
//!
//! Two things follow. Values are never parsed as YAML, so no value can change the structure of a rendered
//! document, whatever it holds (the escape function's quoting stays as the second line of defence for text
//! rendered without slots). And the YAML parser, the costliest step of a render, runs once per distinct
//! skeleton instead of once per Application.
//!
//! A template's own text may not hold the two reserved characters (U+E000, U+E001); a Blueprint that does is
//! refused when it loads, so every token in the output is one the renderer printed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

use crate::yaml::{self, Pos};

/// Opens a slot token.
pub const OPEN: char = '\u{E000}';
/// Closes a slot token.
pub const CLOSE: char = '\u{E001}';

thread_local! {
    static SLOTS: RefCell<Option<Vec<Recorded>>> = const { RefCell::new(None) };
}

/// A recorded value: its own copy, or where it stands in the template context it was read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// A value of its own (a string printed, a value a helper made).
    Value(Value),
    /// The value at this path of the template context's data, recorded without a copy.
    At(Vec<String>),
}

/// The value at `path` (object keys and array indexes) in `root`.
pub fn value_at<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(root, |v, seg| match v {
        Value::Object(map) => map.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// The recorded values with those recorded by path read from `root` (the data they were recorded from).
pub fn resolve<'a>(recorded: &'a [Recorded], root: &'a Value) -> Vec<&'a Value> {
    static NULL: Value = Value::Null;
    recorded
        .iter()
        .map(|r| match r {
            Recorded::Value(v) => v,
            Recorded::At(path) => value_at(root, path).unwrap_or(&NULL),
        })
        .collect()
}

/// Records the values printed on this thread while it lives; see the module documentation.
#[derive(Debug)]
pub struct Recording {
    _private: (),
}

impl Recording {
    /// Starts recording on this thread (a recording already running is replaced).
    pub fn start() -> Recording {
        SLOTS.with(|s| *s.borrow_mut() = Some(Vec::new()));
        Recording { _private: () }
    }

    /// Stops recording and returns the slots, in print order.
    pub fn finish(self) -> Vec<Recorded> {
        SLOTS.with(|s| s.borrow_mut().take()).unwrap_or_default()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        SLOTS.with(|s| s.borrow_mut().take());
    }
}

/// While recording: keeps `value` in the next slot and returns its token. Otherwise `None`.
pub fn record(value: impl FnOnce() -> Value) -> Option<String> {
    record_as(|| Recorded::Value(value()))
}

/// While recording: keeps in the next slot where the value printed stands in the template context's data
/// (see [`resolve`]) and returns its token. Otherwise `None`.
pub fn record_at(path: &[String]) -> Option<String> {
    record_as(|| Recorded::At(path.to_vec()))
}

fn record_as(recorded: impl FnOnce() -> Recorded) -> Option<String> {
    SLOTS.with(|s| {
        let mut slots = s.borrow_mut();
        let slots = slots.as_mut()?;
        let token = token(slots.len());
        slots.push(recorded());
        Some(token)
    })
}

/// The token of slot `n`: `"\u{E000}N\u{E001}"`.
fn token(n: usize) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut t = String::with_capacity(2 + 2 * OPEN.len_utf8() + digits.len() - at);
    t.push('"');
    t.push(OPEN);
    for &d in &digits[at..] {
        t.push(char::from(d));
    }
    t.push(CLOSE);
    t.push('"');
    t
}

/// A parsed skeleton node: template text, or a slot to fill.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Leaf(Value),
    Slot(usize),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Key {
    Name(String),
    Slot(usize),
}

/// A template's parsed output with slots in place of the values printed: one tree per document.
#[derive(Debug, Clone, PartialEq)]
pub struct Skeleton {
    docs: Vec<Node>,
}

/// Why a skeleton cannot be built or filled, and where in the rendered output.
#[derive(Debug, Clone, PartialEq)]
pub enum SkeletonError {
    /// The output is not YAML.
    Yaml(yaml::YamlError),
    /// A printed value is part of a longer scalar.
    Embedded(Pos),
    /// A value printed as a mapping key is not a string.
    KeyNotString { path: Vec<String>, found: &'static str },
    /// A mapping has the same key twice once values are filled in.
    DuplicateKey { path: Vec<String>, key: String },
}

impl Skeleton {
    /// Parses the text a template rendered while [`Recording`].
    pub fn parse(text: &str, limits: &yaml::Limits) -> Result<Skeleton, SkeletonError> {
        let docs = yaml::parse(text, limits).map_err(SkeletonError::Yaml)?;
        let line_starts = line_starts(text);
        let docs = docs
            .into_iter()
            .map(|d| build(d.root, text, &line_starts))
            .collect::<Result<_, _>>()?;
        Ok(Skeleton { docs })
    }

    /// The documents as JSON, with `slots` (from the same render) filled in.
    pub fn fill(&self, mut slots: Vec<Value>) -> Vec<Result<Value, SkeletonError>> {
        let mut path = Vec::new();
        self.docs.iter().map(|d| fill(d, &mut slots, &mut path)).collect()
    }

    /// The parsed documents, slots unfilled.
    pub(crate) fn docs(&self) -> &[Node] {
        &self.docs
    }

    /// One document as JSON with copies of `slots` filled in (what [`Skeleton::fill`] gives for it).
    pub(crate) fn fill_doc(doc: &Node, slots: &[&Value]) -> Result<Value, SkeletonError> {
        let mut copies: Vec<Value> = slots.iter().map(|v| (*v).clone()).collect();
        fill(doc, &mut copies, &mut Vec::new())
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// Whether the scalar starting at `pos` is written as a token, character for character.
fn written_as_token(text: &str, line_starts: &[usize], pos: Pos) -> bool {
    let Some(&start) = line_starts.get((pos.line as usize).saturating_sub(1)) else {
        return false;
    };
    let line = &text[start..];
    line.char_indices()
        .nth((pos.col as usize).saturating_sub(1))
        .is_some_and(|(at, _)| line[at..].starts_with(['"']) && line[at + 1..].starts_with(OPEN))
}

fn slot_index(s: &str) -> Option<usize> {
    s.strip_prefix(OPEN)?.strip_suffix(CLOSE)?.parse().ok()
}

fn reserved(s: &str) -> bool {
    s.contains([OPEN, CLOSE])
}

fn build(node: yaml::Node, text: &str, line_starts: &[usize]) -> Result<Node, SkeletonError> {
    let at = node.span.start;
    Ok(match node.value {
        yaml::Value::Str(s) if reserved(&s) => match slot_index(&s) {
            Some(n) if written_as_token(text, line_starts, at) => Node::Slot(n),
            _ => return Err(SkeletonError::Embedded(at)),
        },
        yaml::Value::Seq(items) => Node::Seq(
            items
                .into_iter()
                .map(|n| build(n, text, line_starts))
                .collect::<Result<_, _>>()?,
        ),
        yaml::Value::Map(entries) => Node::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = if reserved(&k.name) {
                        match slot_index(&k.name) {
                            Some(n) if written_as_token(text, line_starts, k.span.start) => Key::Slot(n),
                            _ => return Err(SkeletonError::Embedded(k.span.start)),
                        }
                    } else {
                        Key::Name(k.name)
                    };
                    Ok((key, build(v, text, line_starts)?))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => Node::Leaf(
            yaml::Node {
                value: other,
                span: node.span,
            }
            .into_json(),
        ),
    })
}

fn take(slots: &mut [Value], n: usize) -> Value {
    slots.get_mut(n).map(std::mem::take).unwrap_or(Value::Null)
}

fn fill(node: &Node, slots: &mut [Value], path: &mut Vec<String>) -> Result<Value, SkeletonError> {
    Ok(match node {
        Node::Leaf(v) => v.clone(),
        Node::Slot(n) => take(slots, *n),
        Node::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                out.push(fill(item, slots, path)?);
                path.pop();
            }
            Value::Array(out)
        }
        Node::Map(entries) => {
            let mut out = serde_json::Map::new();
            for (key, value) in entries {
                let key = match key {
                    Key::Name(k) => k.clone(),
                    Key::Slot(n) => match take(slots, *n) {
                        Value::String(s) => s,
                        other => {
                            return Err(SkeletonError::KeyNotString {
                                path: path.clone(),
                                found: type_name(&other),
                            });
                        }
                    },
                };
                path.push(key);
                let value = fill(value, slots, path)?;
                let key = path.pop().unwrap_or_default();
                if out.contains_key(&key) {
                    return Err(SkeletonError::DuplicateKey {
                        path: path.clone(),
                        key,
                    });
                }
                out.insert(key, value);
            }
            Value::Object(out)
        }
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Most skeletons kept per template; past it the template's cache starts over (a Blueprint whose `{{#each}}`
/// loops make every Application's structure different gains nothing from keeping them).
const PER_TEMPLATE: usize = 256;

/// Parsed skeletons by template and text, shared by every render of one Blueprint.
///
/// Renders on several threads share it: the text (often kilobytes) is hashed before the lock is taken, so the
/// lock is held only for a map lookup and one comparison.
#[derive(Debug, Default)]
pub struct Skeletons {
    /// Template name → hash of the text → the texts of that hash and their skeletons.
    by_template: Mutex<HashMap<String, ByHash>>,
}

/// The skeletons of one template: hash of the text → the texts of that hash and their skeletons.
type ByHash = HashMap<u64, Vec<(String, Arc<Skeleton>)>>;

fn text_hash(text: &str) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = SKELETON_HASH.build_hasher();
    h.write(text.as_bytes());
    h.finish()
}

/// One hasher seed for the whole process: hashes are compared across threads.
static SKELETON_HASH: std::sync::LazyLock<std::collections::hash_map::RandomState> =
    std::sync::LazyLock::new(std::collections::hash_map::RandomState::new);

impl Skeletons {
    /// The parsed skeleton of `text` rendered by `template`, parsed now if it is new.
    pub fn get_or_parse(
        &self,
        template: &str,
        text: &str,
        limits: &yaml::Limits,
    ) -> Result<Arc<Skeleton>, SkeletonError> {
        let hash = text_hash(text);
        let cached = self
            .by_template
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(template)
            .and_then(|t| t.get(&hash))
            .and_then(|same| same.iter().find(|(t, _)| t == text))
            .map(|(_, s)| Arc::clone(s));
        if let Some(s) = cached {
            return Ok(s);
        }
        let parsed = Arc::new(Skeleton::parse(text, limits)?);
        let mut all = self.by_template.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = all.entry(template.to_owned()).or_default();
        if kept.values().map(Vec::len).sum::<usize>() >= PER_TEMPLATE {
            kept.clear();
        }
        let same = kept.entry(hash).or_default();
        if !same.iter().any(|(t, _)| t == text) {
            same.push((text.to_owned(), Arc::clone(&parsed)));
        }
        Ok(parsed)
    }

    /// How many skeletons are kept, over all templates.
    pub fn len(&self) -> usize {
        self.by_template
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .flat_map(HashMap::values)
            .map(Vec::len)
            .sum()
    }

    /// Whether no skeleton is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(text_with: impl Fn(&mut dyn FnMut(Value) -> String) -> String) -> (String, Vec<Value>) {
        let rec = Recording::start();
        let text = text_with(&mut |v| record(|| v).expect("recording"));
        let root = Value::Null;
        let values = resolve(&rec.finish(), &root).into_iter().cloned().collect();
        (text, values)
    }

    #[test]
    fn tokens_name_their_slots() {
        for n in [0, 7, 10, 99, 12345, usize::MAX] {
            assert_eq!(token(n), format!("\"{OPEN}{n}{CLOSE}\""));
        }
    }

    #[test]
    fn values_recorded_by_path_are_read_from_the_data() {
        let root = json!({"app": {"labels": {"a": "b"}}, "ports": [{"port": 80}]});
        let rec = Recording::start();
        let path = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        record_at(&path(&["app", "labels"])).expect("recording");
        record_at(&path(&["ports", "0", "port"])).expect("recording");
        record(|| json!("own")).expect("recording");
        record_at(&path(&["nothing"])).expect("recording");
        let recorded = rec.finish();
        assert_eq!(
            resolve(&recorded, &root),
            vec![&json!({"a": "b"}), &json!(80), &json!("own"), &Value::Null]
        );
    }

    #[test]
    fn values_fill_their_slots_whatever_they_hold() {
        let hostile = "x\nhostNetwork: true\n\"{{evil}}\": &a *a";
        let (text, slots) = render(|p| {
            format!(
                "name: {}\nspec:\n  env: {}\n  list:\n    - {}\n",
                p(json!(hostile)),
                p(json!([{"name": "A", "value": "1"}])),
                p(json!(3))
            )
        });
        let skel = Skeleton::parse(&text, &yaml::Limits::default()).expect("parses");
        let docs = skel.fill(slots);
        assert_eq!(
            docs,
            vec![Ok(json!({
                "name": hostile,
                "spec": {"env": [{"name": "A", "value": "1"}], "list": [3]}
            }))]
        );
    }

    #[test]
    fn a_value_next_to_other_text_is_refused_with_its_position() {
        let (text, _) = render(|p| format!("a: 1\nname: prefix-{}\n", p(json!("x"))));
        assert_eq!(
            Skeleton::parse(&text, &yaml::Limits::default()),
            Err(SkeletonError::Embedded(Pos::new(2, 7)))
        );
    }

    #[test]
    fn a_token_written_with_escapes_is_not_a_slot() {
        let text = "a: \"\\uE0000\\uE001\"\n";
        assert!(matches!(
            Skeleton::parse(text, &yaml::Limits::default()),
            Err(SkeletonError::Embedded(_))
        ));
    }

    #[test]
    fn keys_from_values_must_be_strings_and_unique() {
        let (text, slots) = render(|p| format!("{}: 1\n{}: 2\n", p(json!("a")), p(json!("a"))));
        let skel = Skeleton::parse(&text, &yaml::Limits::default()).expect("parses");
        assert_eq!(
            skel.fill(slots),
            vec![Err(SkeletonError::DuplicateKey {
                path: vec![],
                key: "a".into()
            })]
        );
        let (text, slots) = render(|p| format!("m:\n  {}: 1\n", p(json!(7))));
        let skel = Skeleton::parse(&text, &yaml::Limits::default()).expect("parses");
        assert_eq!(
            skel.fill(slots),
            vec![Err(SkeletonError::KeyNotString {
                path: vec!["m".into()],
                found: "a number"
            })]
        );
    }

    #[test]
    fn one_skeleton_serves_every_render_with_the_same_structure() {
        let cache = Skeletons::default();
        let mut filled = Vec::new();
        for name in ["a", "b"] {
            let (text, slots) = render(|p| format!("name: {}\n", p(json!(name))));
            let skel = cache
                .get_or_parse("t.yaml.hbs", &text, &yaml::Limits::default())
                .expect("parses");
            filled.extend(skel.fill(slots));
        }
        assert_eq!(filled, vec![Ok(json!({"name": "a"})), Ok(json!({"name": "b"}))]);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn nothing_is_recorded_outside_a_recording() {
        assert_eq!(record(|| json!(1)), None);
        let rec = Recording::start();
        drop(rec);
        assert_eq!(record(|| json!(1)), None);
    }
}
