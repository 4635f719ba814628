//! Problems: what rendering and validation report, each with a stable code, a location and a fix.

use std::fmt;

use serde::Serialize;

use crate::schema::dotted;

/// Where a problem stands. Render and validate report locations only; the CLI attaches source text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Location {
    /// A field of the input object, e.g. `spec.allowTo[0].cidr` as segments.
    Field {
        /// Keys and decimal indexes from the object's root.
        path: Vec<String>,
    },
    /// A position in a Blueprint template.
    Template {
        /// Template name, e.g. `deployment.yaml.hbs`.
        template: String,
        /// Line, from 1.
        line: u32,
        /// Column, from 1.
        col: u32,
    },
    /// A field of an object a template rendered.
    Rendered {
        /// Template that rendered the object.
        template: String,
        /// `kind` of the object, when known.
        kind: String,
        /// Name of the object, when known.
        name: String,
        /// Keys and decimal indexes from the object's root.
        path: Vec<String>,
    },
    /// A Blueprint as a whole.
    Blueprint {
        /// Blueprint name.
        name: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Field { path } if path.is_empty() => f.write_str("the object"),
            Location::Field { path } => f.write_str(&dotted(path)),
            Location::Template { template, line, col } => write!(f, "template {template}:{line}:{col}"),
            Location::Rendered {
                template,
                kind,
                name,
                path,
            } => {
                write!(f, "{kind} {name:?} from template {template}")?;
                if !path.is_empty() {
                    write!(f, " at {}", dotted(path))?;
                }
                Ok(())
            }
            Location::Blueprint { name } => write!(f, "Blueprint {name:?}"),
        }
    }
}

/// One reason an Application or Blueprint cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Stable category, used for exit codes, metric labels and Event reasons (see [`codes`]).
    pub code: &'static str,
    /// The rule that failed, e.g. `maxReplicas`, `maximum`, `unknown-field`.
    pub rule: String,
    /// Where it stands.
    pub location: Location,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Problem {
    /// A problem at a field of the input.
    pub fn field(
        code: &'static str,
        rule: impl Into<String>,
        path: Vec<String>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            code,
            rule: rule.into(),
            location: Location::Field { path },
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a fix.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Problem {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// Stable problem codes.
pub mod codes {
    /// The input is not YAML, or not the kind of object expected.
    pub const SYNTAX: &str = "plinth::syntax";
    /// A field breaks the CRD schema or a validation rule.
    pub const SPEC: &str = "plinth::spec";
    /// The Application asks for more than its Blueprint allows.
    pub const GUARDRAIL: &str = "plinth::guardrail";
    /// `values` does not match the Blueprint's parameter schema.
    pub const VALUES: &str = "plinth::values";
    /// The Blueprint is missing or does not compile.
    pub const BLUEPRINT: &str = "plinth::blueprint";
    /// A template failed to render.
    pub const TEMPLATE: &str = "plinth::template";
    /// A template rendered something Plinth refuses to apply.
    pub const RENDERED: &str = "plinth::rendered";
    /// A rendered pod breaks the Pod Security Standards "restricted" profile.
    pub const POD_SECURITY: &str = "plinth::pod-security";
}

/// Every problem that stopped a render; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// One problem.
    pub fn one(p: Problem) -> Problems {
        Problems(vec![p])
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("no problems"),
            [one] => write!(f, "{one}"),
            [first, rest @ ..] => write!(f, "{first} (and {} more)", rest.len()),
        }
    }
}

impl std::error::Error for Problems {}
