//! Loading Blueprints: compile their templates once, refuse unsafe ones, and fingerprint their content.
//!
//! A partial included on a line of its own at a template's top level (`{{> pod}}`) is written into the
//! template's text when it loads, each line indented as Handlebars indents the partial's output. Handlebars
//! renders an included partial on a copy of the whole template context; written in, it reads the context in
//! place. Errors in those lines still name the partial and its own line and column ([`LoadedBlueprint::source_position`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use handlebars::Handlebars;
use handlebars::template::{Template, TemplateElement};
use plinth_api::blueprint::{Blueprint, BlueprintSpec};
use sha2::{Digest, Sha256};
use validator::Validate;

use super::slots::{self, Skeletons};
use super::{escape, helpers};
use crate::problem::{Location, Problem, Problems, codes};
use crate::validate::validator_problems;

/// A Blueprint with its templates compiled, ready to render many Applications.
#[derive(Debug)]
pub struct LoadedBlueprint {
    /// Blueprint name.
    pub name: String,
    /// The Blueprint's spec as written.
    pub spec: BlueprintSpec,
    /// `sha256:` hash of the spec, the identity of this revision's content.
    pub hash: String,
    registry: Handlebars<'static>,
    object_templates: Vec<String>,
    skeletons: Skeletons,
    /// Partials written into each template's text, in line order.
    inlined: HashMap<String, Vec<Inlined>>,
}

/// A partial written into a template's text in place of its `{{> name}}` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inlined {
    /// Line (from 1) of the text as compiled where the partial's first line stands.
    first: usize,
    /// How many lines the partial has.
    lines: usize,
    /// The partial's name, as Handlebars names it in errors.
    partial: String,
    /// Characters of indentation put before each of its lines.
    indent: usize,
}

/// The name a partial file is used by: `_container.hbs` is `{{> container}}`.
pub fn partial_name(file: &str) -> Option<&str> {
    let stem = file.strip_prefix('_')?;
    Some(stem.strip_suffix(".hbs").unwrap_or(stem))
}

impl LoadedBlueprint {
    /// Loads a Blueprint object.
    pub fn from_object(bp: &Blueprint) -> Result<LoadedBlueprint, Problems> {
        let name = bp.metadata.name.clone().unwrap_or_default();
        LoadedBlueprint::compile(&name, bp.spec.clone())
    }

    /// Validates a Blueprint spec and compiles its templates in strict mode with Plinth's safe escaping.
    pub fn compile(name: &str, spec: BlueprintSpec) -> Result<LoadedBlueprint, Problems> {
        let mut problems = Vec::new();
        if let Err(e) = spec.validate() {
            problems.extend(validator_problems(&e, vec!["spec".into()]));
        }
        if let Some(params) = &spec.parameters
            && !params.is_object()
        {
            problems.push(Problem::field(
                codes::SPEC,
                "parameters",
                vec!["spec".into(), "parameters".into()],
                "parameters must be a JSON Schema object",
            ));
        }
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(escape::escape);
        helpers::register(&mut registry);
        let mut object_templates = Vec::new();
        for (file, source) in &spec.templates {
            if let Some((line, col)) = find_reserved(source) {
                problems.push(
                    template_problem(
                        file,
                        line,
                        col,
                        "the characters U+E000 and U+E001 are reserved for Plinth's renderer".into(),
                    )
                    .with_hint("remove them from the template (values printed with {{…}} may hold any character)"),
                );
                continue;
            }
            let compiled = match Template::compile(source) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(compile_problem(file, &e));
                    continue;
                }
            };
            if let Some((line, col, what)) = find_unescaped(&compiled) {
                problems.push(
                    template_problem(
                        file,
                        line,
                        col,
                        format!("{what} is not allowed: it would print a value without YAML escaping"),
                    )
                    .with_hint("use {{value}} for a string or {{json value}} for a number, list or object"),
                );
                continue;
            }
            let registered = match partial_name(file) {
                Some(partial) => registry.register_partial(partial, source.as_str()),
                None => {
                    object_templates.push(file.clone());
                    registry.register_template_string(file, source.as_str())
                }
            };
            if let Err(e) = registered {
                problems.push(compile_problem(file, &e));
            }
        }
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        let partials: BTreeMap<&str, &str> = spec
            .templates
            .iter()
            .filter_map(|(file, source)| Some((partial_name(file)?, source.as_str())))
            .collect();
        let mut inlined = HashMap::new();
        for file in &object_templates {
            let Some(source) = spec.templates.get(file) else {
                continue;
            };
            // A text that does not compile leaves the template as registered above, partials included.
            if let Some((text, parts)) = inline_partials(source, &partials)
                && registry.register_template_string(file, text).is_ok()
            {
                inlined.insert(file.clone(), parts);
            }
        }
        let hash = content_hash(&spec);
        Ok(LoadedBlueprint {
            name: name.to_owned(),
            spec,
            hash,
            registry,
            object_templates,
            skeletons: Skeletons::default(),
            inlined,
        })
    }

    /// Where `line` and `col` of `template` as compiled stand in the Blueprint's own files: in a partial
    /// written into it (by the name Handlebars gives the partial), or in the template's own text.
    pub(crate) fn source_position(&self, template: &str, line: usize, col: usize) -> (String, usize, usize) {
        let mut shift = 0;
        for part in self.inlined.get(template).into_iter().flatten() {
            if line < part.first {
                break;
            }
            if line < part.first + part.lines {
                return (
                    part.partial.clone(),
                    line - part.first + 1,
                    col.saturating_sub(part.indent).max(1),
                );
            }
            // The partial's lines stand where one line (the `{{> name}}`) stood.
            shift += part.lines - 1;
        }
        (template.to_owned(), line - shift, col)
    }

    /// The file a template or partial name stands for: a partial's name (`pod`, as Handlebars reports it) is its
    /// file (`_pod.hbs`); any other name is a file already.
    pub(crate) fn file_of(&self, name: &str) -> String {
        if self.spec.templates.contains_key(name) {
            return name.to_owned();
        }
        self.spec
            .templates
            .keys()
            .find(|file| partial_name(file) == Some(name))
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }

    /// Names of the templates that render objects, in name order.
    pub fn object_templates(&self) -> &[String] {
        &self.object_templates
    }

    pub(crate) fn registry(&self) -> &Handlebars<'static> {
        &self.registry
    }

    /// The parsed template outputs kept for this Blueprint's renders.
    pub fn skeletons(&self) -> &Skeletons {
        &self.skeletons
    }
}

/// Whether a partial reads the same written into a template as included: it ends its last line, and
/// holds nothing whose meaning depends on being a partial or on the whitespace around it (other partials,
/// inline partials and decorators, parent paths, whitespace control, raw blocks).
fn inlinable(partial: &str) -> bool {
    partial.ends_with('\n')
        && !["{{>", "{{#>", "{{*", "{{#*", "~", "@partial-block", "../", "{{{{"]
            .iter()
            .any(|s| partial.contains(s))
        && partial.lines().all(lines_up)
        && !empty_after_tag(partial)
}

/// Whether an empty line starts the partial or follows a block tag standing alone: Handlebars writes it
/// without indentation (it does indent every other empty line), a partial written in with it.
fn empty_after_tag(partial: &str) -> bool {
    let mut after_tag = true;
    partial.lines().any(|line| {
        let body = line.trim();
        let empty = line.trim_end_matches('\r').is_empty();
        let found = empty && after_tag;
        after_tag = body.starts_with("{{");
        found
    })
}

/// Whether the output of a partial's line starts where the line does. Handlebars indents a partial's output
/// line by line, a partial written in is indented line by line of its text, and the two agree when each
/// line either starts with text (Handlebars does not always indent a value or a helper's output that starts
/// a line) or is one block tag or comment standing alone (which Handlebars drops whole), and every other
/// block opens and closes on one line (a block whose body spans lines, repeated or left out, starts output
/// lines in the middle of the text's lines).
fn lines_up(line: &str) -> bool {
    let body = line.trim();
    if body.starts_with("{{") {
        return body.ends_with("}}")
            && body.matches("{{").count() == 1
            && ["{{#", "{{/", "{{^", "{{else", "{{!"]
                .iter()
                .any(|t| body.starts_with(t));
    }
    let mut depth = 0usize;
    for (at, _) in line.match_indices("{{") {
        let tag = &line[at + 2..];
        if tag.starts_with("else") || tag.starts_with("^}}") {
            if depth == 0 {
                return false;
            }
        } else if tag.starts_with('#') || tag.starts_with('^') {
            depth += 1;
        } else if tag.starts_with('/') {
            let Some(d) = depth.checked_sub(1) else { return false };
            depth = d;
        } else if tag.starts_with('!') && !tag.contains("}}") {
            // A comment that goes on past its line.
            return false;
        }
    }
    depth == 0
}

/// The template's text with each top-level, stand-alone `{{> name}}` line replaced by the partial's lines,
/// each indented as that line is, and where they stand; `None` when no partial can be written in.
fn inline_partials(source: &str, partials: &BTreeMap<&str, &str>) -> Option<(String, Vec<Inlined>)> {
    // Inline partials and decorators of the template itself would change which partial a name means, and
    // whitespace control next to a `{{> name}}` line would trim the partial's own text once written in.
    if ["{{*", "{{#*", "{{~", "~}}"].iter().any(|s| source.contains(s)) {
        return None;
    }
    let compiled = Template::compile(source).ok()?;
    let mut tags: Vec<(usize, &str)> = Vec::new();
    for (i, el) in compiled.elements.iter().enumerate() {
        let TemplateElement::PartialExpression(d) = el else {
            continue;
        };
        let Some(name) = d.name.as_name() else { continue };
        let stand_alone = d.params.is_empty() && d.hash.is_empty() && d.template.is_none() && d.indent.is_some();
        if let (true, Some((&name, &partial)), Some(m)) =
            (stand_alone, partials.get_key_value(name), compiled.mapping.get(i))
            && inlinable(partial)
        {
            tags.push((m.0, name));
        }
    }
    if tags.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(source.len() + 4096);
    let mut parts = Vec::new();
    let mut out_line = 1;
    for (i, line) in source.split_inclusive('\n').enumerate() {
        let tag = tags.iter().find(|(l, _)| *l == i + 1).map(|(_, name)| *name);
        let written = tag.and_then(|name| {
            let body = line.trim();
            let named = body.strip_prefix("{{>")?.strip_suffix("}}")?.trim();
            let indent = &line[..line.len() - line.trim_start().len()];
            (named == name && line.ends_with('\n') && indent.chars().all(|c| c == ' ' || c == '\t'))
                .then(|| (name, indent, partials.get(name).copied()))
        });
        match written {
            Some((name, indent, Some(partial))) => {
                let lines = partial.split_inclusive('\n').count();
                for l in partial.split_inclusive('\n') {
                    out.push_str(indent);
                    out.push_str(l);
                }
                parts.push(Inlined {
                    first: out_line,
                    lines,
                    partial: name.to_owned(),
                    indent: indent.chars().count(),
                });
                out_line += lines;
            }
            _ => {
                out.push_str(line);
                out_line += 1;
            }
        }
    }
    (!parts.is_empty()).then_some((out, parts))
}

/// Line and column (from 1) of the first reserved character in a template's source.
fn find_reserved(source: &str) -> Option<(usize, usize)> {
    source.lines().enumerate().find_map(|(i, line)| {
        line.chars()
            .position(|c| c == slots::OPEN || c == slots::CLOSE)
            .map(|col| (i + 1, col + 1))
    })
}

fn compile_problem(file: &str, e: &handlebars::TemplateError) -> Problem {
    let (line, col) = e.pos().unwrap_or((1, 1));
    template_problem(file, line, col, format!("template does not compile: {}", e.reason()))
}

fn template_problem(file: &str, line: usize, col: usize, message: String) -> Problem {
    let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    Problem {
        code: codes::BLUEPRINT,
        rule: "template".into(),
        location: Location::Template {
            template: file.to_owned(),
            line: clamp(line),
            col: clamp(col),
        },
        message,
        hint: None,
    }
}

/// The first triple-stash (`{{{value}}}`) anywhere in a template, with its position.
fn find_unescaped(t: &Template) -> Option<(usize, usize, &'static str)> {
    for (i, el) in t.elements.iter().enumerate() {
        let pos = t.mapping.get(i).map_or((1, 1), |m| (m.0, m.1));
        match el {
            TemplateElement::HtmlExpression(_) => {
                return Some((pos.0, pos.1, "triple-stash output `{{{…}}}`"));
            }
            TemplateElement::HelperBlock(h) => {
                for inner in [&h.template, &h.inverse].into_iter().flatten() {
                    if let Some(found) = find_unescaped(inner) {
                        return Some(found);
                    }
                }
            }
            TemplateElement::DecoratorBlock(d) | TemplateElement::PartialBlock(d) => {
                if let Some(found) = d.template.as_ref().and_then(find_unescaped) {
                    return Some(found);
                }
            }
            TemplateElement::RawString(_)
            | TemplateElement::Expression(_)
            | TemplateElement::DecoratorExpression(_)
            | TemplateElement::PartialExpression(_)
            | TemplateElement::Comment(_) => {}
            // An element kind Plinth does not know yet might print unescaped: refuse it (fail closed).
            _ => return Some((pos.0, pos.1, "an unsupported template element")),
        }
    }
    None
}

/// `sha256:<hex>` of the spec's canonical JSON (keys sorted), the same on every machine.
pub fn content_hash(spec: &BlueprintSpec) -> String {
    let canonical = serde_json::to_vec(&serde_json::to_value(spec).unwrap_or_default()).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec(templates: &[(&str, &str)]) -> BlueprintSpec {
        BlueprintSpec {
            description: String::new(),
            parameters: None,
            defaults: Default::default(),
            policy: Default::default(),
            templates: templates
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            rollout: None,
        }
    }

    #[test]
    fn refuses_triple_stash_with_its_position() {
        let err = LoadedBlueprint::compile(
            "t",
            spec(&[("a.yaml.hbs", "kind: ConfigMap\n{{#if x}}\n  v: {{{x}}}\n{{/if}}\n")]),
        )
        .expect_err("refused");
        assert_eq!(err.0.len(), 1);
        assert_eq!(
            err.0[0].location,
            Location::Template {
                template: "a.yaml.hbs".into(),
                line: 3,
                col: 6
            }
        );
    }

    #[test]
    fn reports_syntax_errors_with_line_and_column() {
        let err = LoadedBlueprint::compile("t", spec(&[("a.yaml.hbs", "a: 1\nb: {{#if x}}\n")])).expect_err("refused");
        assert!(
            matches!(&err.0[0].location, Location::Template { template, .. } if template == "a.yaml.hbs"),
            "{err:?}"
        );
    }

    #[test]
    fn hash_follows_content() {
        let a = content_hash(&spec(&[("a.yaml.hbs", "x")]));
        assert_eq!(a, content_hash(&spec(&[("a.yaml.hbs", "x")])));
        assert_ne!(a, content_hash(&spec(&[("a.yaml.hbs", "y")])));
        assert!(a.starts_with("sha256:") && a.len() == 71);
    }

    /// The same templates in a plain strict registry, partials included the Handlebars way.
    fn handlebars_way(templates: &[(&str, &str)]) -> Handlebars<'static> {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(escape::escape);
        helpers::register(&mut hb);
        for (file, source) in templates {
            let registered = match partial_name(file) {
                Some(p) => hb.register_partial(p, *source),
                None => hb.register_template_string(file, *source),
            };
            registered.expect("compiles");
        }
        hb
    }

    #[test]
    fn a_failure_in_a_partial_is_reported_in_its_file() {
        let templates = [
            ("_pod.hbs", "labels: {{json app.labels}}\nimage: {{image}}\n"),
            ("deploy.yaml.hbs", "kind: Deployment\nspec:\n  {{> pod}}\n"),
            (
                "inside.yaml.hbs",
                "kind: ConfigMap\n{{#if app}}\ndata:\n  {{> pod}}\n{{/if}}\n",
            ),
        ];
        let bp = LoadedBlueprint::compile("t", spec(&templates)).expect("compiles");
        assert_eq!(bp.file_of("pod"), "_pod.hbs");
        assert_eq!(bp.file_of("deploy.yaml.hbs"), "deploy.yaml.hbs");
        let data = serde_json::json!({"app": {"labels": {"a": "b"}}});
        // Written into its template, and included by Handlebars: the problem names `_pod.hbs`, line 2.
        for template in ["deploy.yaml.hbs", "inside.yaml.hbs"] {
            let e = bp.registry().render(template, &data).expect_err("image is missing");
            let problem = super::super::engine::template_error(&bp, template, &e);
            assert!(
                matches!(&problem.location, Location::Template { template, line: 2, .. } if template == "_pod.hbs"),
                "{template}: {:?}",
                problem.location
            );
        }
    }

    #[test]
    fn partials_written_in_render_and_fail_as_included_partials_do() {
        let templates = [
            (
                "_pod.hbs",
                "labels: {{json app.labels}}\n{{#if values.flag}}\nflag: {{values.flag}}\n{{/if}}\ncontainers:\n  - name: app\n    image: {{image}}\n\n    args: {{json values.args}}\n",
            ),
            (
                "deploy.yaml.hbs",
                "kind: Deployment\nspec:\n  template:\n    {{> pod}}\n  after: {{values.after}}\n",
            ),
            (
                "inside.yaml.hbs",
                "kind: ConfigMap\n{{#if values.flag}}\ndata:\n  {{> pod}}\n{{/if}}\n",
            ),
        ];
        let bp = LoadedBlueprint::compile("t", spec(&templates)).expect("compiles");
        assert_eq!(bp.inlined.get("deploy.yaml.hbs").map(Vec::len), Some(1));
        assert_eq!(
            bp.inlined.get("inside.yaml.hbs"),
            None,
            "only top-level partials are written in"
        );
        let plain = handlebars_way(&templates);
        let full = serde_json::json!({
            "app": {"labels": {"a": "b"}}, "image": "x:1",
            "values": {"flag": "on", "args": ["a", "b"], "after": "z"}
        });
        for template in ["deploy.yaml.hbs", "inside.yaml.hbs"] {
            assert_eq!(
                bp.registry().render(template, &full).expect("renders"),
                plain.render(template, &full).expect("renders"),
                "{template}"
            );
        }
        // Errors in the partial, and after it, at the same file, line and column.
        let app = serde_json::json!({"labels": {"a": "b"}});
        for (data, at) in [
            (
                serde_json::json!({"app": app, "image": "x:1", "values": {"flag": "on", "after": "z"}}),
                ("pod", 9, 11),
            ),
            (
                serde_json::json!({"app": app, "values": {"args": [], "after": "z"}}),
                ("pod", 7, 12),
            ),
            (
                serde_json::json!({"app": app, "image": "x:1", "values": {"args": []}}),
                ("deploy.yaml.hbs", 5, 10),
            ),
        ] {
            let ours = bp.registry().render("deploy.yaml.hbs", &data).expect_err("fails");
            let theirs = plain.render("deploy.yaml.hbs", &data).expect_err("fails");
            let line = ours.line_no.expect("line");
            let col = ours.column_no.expect("column");
            let ours = bp.source_position(ours.template_name.as_deref().unwrap_or_default(), line, col);
            let theirs = (
                theirs.template_name.clone().unwrap_or_default(),
                theirs.line_no.expect("line"),
                theirs.column_no.expect("column"),
            );
            assert_eq!(ours, theirs);
            assert_eq!((ours.0.as_str(), ours.1, ours.2), at);
        }
    }

    #[test]
    fn partials_written_in_render_and_fail_as_included_whatever_their_shape() {
        let partials = [
            "{{json a}}\nb: 1\n",
            "a: 1\n\nb: 2\n",
            "a: 1\n   \nb: 2\n",
            "{{#each xs}}\n- {{this}}\n{{/each}}\n",
            "{{! comment }}\na: 1\n",
            "{{#if f}}\na: 1\n{{else}}\na: 2\n{{/if}}\n",
            "a: 1\r\nb: 2\r\n",
            "{{#each xs}}{{this}}\n{{/each}}\n",
            "a: {{x}}\n{{#if f}}b: {{x}}\n{{/if}}\n",
            "{{#with o}}\nk: {{v}}\n{{/with}}\n",
            "{{@root.x}}\n",
            "{{#each xs}}\n  {{@index}}: {{this}}\n{{/each}}\n",
            "{{lookup o \"v\"}}\n",
            "{{#each xs}}\n{{#if @first}}\nfirst: {{this}}\n{{/if}}\n{{/each}}\n",
            "k: |\n  line\n  {{x}}\n",
            "{{!-- multi\nline --}}\na: 1\n",
            "{{x}}: {{x}}\n",
            "\n",
            "  a: 1\n",
            "{{#unless f}}\nx\n{{/unless}}\nz: {{x}}\n",
            "{{#each o}}\n{{@key}}: {{this}}\n{{/each}}\n",
            "{{#each xs as |v|}}\n- {{v}}\n{{/each}}\n",
            "{{this.x}}\n",
            "{{.}}\n",
        ];
        let templates = [
            "top:\n  {{> p}}\nend: 1\n",
            "top:\n\t{{> p}}\nend: 1\n",
            "{{> p}}\n",
            "a: {{json x~}}\n  {{> p}}\nend: 1\n",
            "a: {{json x}}   \n  {{> p}}\nend: 1\n",
            "a: 1\n  {{> p}}\n  {{> p}}\n",
            "{{#if f}}\n{{/if}}\n  {{> p}}\n",
            "x: 1\n  {{>p}}\n",
            "  {{> p }}\n",
            "a:\n  {{> p}}\r\nb: 1\r\n",
            "{{#*inline \"q\"}}x{{/inline}}\n  {{> p}}\n",
            "a: 1\n  {{> p}}",
            "a: |\n  {{> p}}\n",
            "a: 1 {{! c }}\n  {{> p}}\n",
        ];
        let datas = [
            serde_json::json!({"x": "v", "a": {"k": "v"}, "xs": ["a", "b"], "f": true, "o": {"v": "w"}}),
            serde_json::json!({"x": "v", "a": {"k": "v"}, "xs": [], "f": false, "o": {}}),
            serde_json::json!({"a": {"k": "v"}, "xs": ["a", "b", "c"], "f": true, "o": {"v": "w", "u": "z"}}),
            serde_json::json!({"x": "v", "xs": [{"y": 1}], "f": true}),
        ];
        let mut bad = Vec::new();
        let mut inlined = 0;
        for data in &datas {
            for (pi, p) in partials.iter().enumerate() {
                for (ti, t) in templates.iter().enumerate() {
                    let files = [("_p.hbs", *p), ("t.yaml.hbs", *t)];
                    let Ok(bp) = LoadedBlueprint::compile("t", spec(&files)) else {
                        continue;
                    };
                    let plain = handlebars_way(&files);
                    inlined += usize::from(bp.inlined.contains_key("t.yaml.hbs"));
                    let pos = |e: handlebars::RenderError, ours: bool| {
                        let name = e.template_name.clone().unwrap_or_default();
                        let (l, c) = (e.line_no.unwrap_or(0), e.column_no.unwrap_or(0));
                        let at = if ours {
                            bp.source_position(&name, l, c)
                        } else {
                            (name, l, c)
                        };
                        format!("{at:?} {}", e.reason())
                    };
                    let ours = bp.registry().render("t.yaml.hbs", data).map_err(|e| pos(e, true));
                    let theirs = plain.render("t.yaml.hbs", data).map_err(|e| pos(e, false));
                    if ours != theirs {
                        bad.push(format!(
                            "p{pi} t{ti} inlined={:?}\n ours={ours:?}\n theirs={theirs:?}",
                            bp.inlined.contains_key("t.yaml.hbs")
                        ));
                    }
                }
            }
        }
        assert!(inlined > 300, "most of these are written in ({inlined})");
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    #[test]
    fn the_shipped_pod_partials_are_written_in() {
        assert!(inlinable(include_str!("../../../templates/web/_pod.hbs")));
        assert!(inlinable(include_str!("../../../templates/worker/_pod.hbs")));
    }
}
