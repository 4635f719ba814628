//! Loading Blueprints: compile their templates once, refuse unsafe ones, and fingerprint their content.

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
        let hash = content_hash(&spec);
        Ok(LoadedBlueprint {
            name: name.to_owned(),
            spec,
            hash,
            registry,
            object_templates,
            skeletons: Skeletons::default(),
        })
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
}
