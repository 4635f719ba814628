//! `plinth schema`: a JSON Schema of Application and Blueprint for editors, derived from the CRDs.

use super::exit;

/// Kinds `plinth schema` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemaKind {
    /// The Application kind.
    #[value(name = "Application", alias = "application")]
    Application,
    /// The Blueprint kind.
    #[value(name = "Blueprint", alias = "blueprint")]
    Blueprint,
}

/// Arguments of `plinth schema`.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// Only this kind; both (chosen by `kind`) when left out.
    #[arg(long, value_enum)]
    pub kind: Option<SchemaKind>,
}

/// Runs `plinth schema`.
pub fn run(args: &SchemaArgs) -> u8 {
    let kind = args.kind.map(|k| match k {
        SchemaKind::Application => "Application",
        SchemaKind::Blueprint => "Blueprint",
    });
    match crate::validate::jsonschema::schema(kind).and_then(|s| serde_json::to_string_pretty(&s).ok()) {
        Some(s) => {
            println!("{s}");
            exit::OK
        }
        None => {
            eprintln!("internal error: the CRD schema is missing");
            exit::INTERNAL
        }
    }
}
