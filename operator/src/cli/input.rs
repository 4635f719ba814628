//! Reading inputs: files, folders (recursive, `.yaml`, `.yml`, `.json`) and `-` for standard input, split into YAML documents.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::yaml::{self, Document, Limits, Pos};

/// One input file and its text.
#[derive(Debug, Clone)]
pub struct Source {
    /// The name to show: the path as given, or `<stdin>`.
    pub name: String,
    /// The text, when it could be read as UTF-8.
    pub text: String,
}

/// Why an input could not be read as YAML documents.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadError {
    /// The file could not be opened or read.
    Io(String),
    /// The file holds NUL bytes or is otherwise binary.
    Binary,
    /// The file is not UTF-8; the position of the first bad byte.
    Utf8(Pos),
    /// The file is larger than the limit.
    TooLarge(u64, usize),
    /// The YAML could not be parsed.
    Yaml(yaml::YamlError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "cannot read the file: {e}"),
            ReadError::Binary => f.write_str("the file is binary (it holds NUL bytes), not YAML"),
            ReadError::Utf8(pos) => write!(
                f,
                "the file is not UTF-8 text (first bad byte at {pos}); save it as UTF-8"
            ),
            ReadError::TooLarge(size, limit) => write!(f, "the file is {size} bytes, more than the {limit}-byte limit"),
            ReadError::Yaml(e) => write!(f, "{e}"),
        }
    }
}

/// Expands paths: files as given, folders recursively (`.yaml`, `.yml`, `.json`, sorted), `-` as standard input.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push(p.clone());
        } else if p.is_dir() {
            walk(p, &mut out).map_err(|e| format!("{}: cannot list the folder: {e}", p.display()))?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    // The listing says which entries are folders (a symbolic link is followed, as `Path::is_dir` does).
    let mut entries: Vec<(PathBuf, bool)> = std::fs::read_dir(dir)?
        .filter_map(|e| {
            let e = e.ok()?;
            let is_dir = match e.file_type() {
                Ok(t) if t.is_symlink() => e.path().is_dir(),
                Ok(t) => t.is_dir(),
                Err(_) => e.path().is_dir(),
            };
            Some((e.path(), is_dir))
        })
        .collect();
    entries.sort();
    for (e, is_dir) in entries {
        if is_dir {
            walk(&e, out)?;
        } else if e
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
        {
            out.push(e);
        }
    }
    Ok(())
}

/// Reads one input (a path or `-`) with the size limit.
pub fn read(path: &Path, limits: &Limits) -> (String, Result<Source, ReadError>) {
    let name = if path.as_os_str() == "-" {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    };
    let mut bytes = Vec::new();
    let cap = limits.max_bytes as u64 + 1;
    let read = if path.as_os_str() == "-" {
        std::io::stdin().lock().take(cap).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| {
            // Room for the whole file (and the read that finds its end) up front: one read, not a dozen.
            let size = f.metadata().map_or(0, |m| m.len()).min(cap);
            bytes.reserve_exact(usize::try_from(size).unwrap_or(0).saturating_add(1));
            f.take(cap).read_to_end(&mut bytes)
        })
    };
    if let Err(e) = read {
        return (name, Err(ReadError::Io(e.to_string())));
    }
    if bytes.len() > limits.max_bytes {
        return (name, Err(ReadError::TooLarge(bytes.len() as u64, limits.max_bytes)));
    }
    (name.clone(), decode(bytes).map(|text| Source { name, text }))
}

/// Decodes bytes as UTF-8 text, refusing binary data with the position of the first bad byte.
pub fn decode(bytes: Vec<u8>) -> Result<String, ReadError> {
    if bytes.contains(&0) {
        return Err(ReadError::Binary);
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let text = String::from_utf8_lossy(valid);
        let line = text.matches('\n').count() + 1;
        let col = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ReadError::Utf8(Pos::new(
            u32::try_from(line).unwrap_or(u32::MAX),
            u32::try_from(col).unwrap_or(u32::MAX),
        ))
    })
}

/// Parses a source's documents.
pub fn documents(source: &Source, limits: &Limits) -> Result<Vec<Document>, ReadError> {
    let text = source.text.strip_prefix('\u{feff}').unwrap_or(&source.text);
    yaml::parse(text, limits).map_err(ReadError::Yaml)
}
