//! Kubernetes resource quantities (`250m`, `1.5Gi`, `2e3`): parse, refuse malformed ones, compare.

use std::fmt;

/// Why a quantity was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError {
    /// The text that was refused.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a Kubernetes quantity ({}); write a number with an optional suffix, such as `250m`, `1`, `512Mi` or `2Gi`",
            self.input, self.reason
        )
    }
}

impl std::error::Error for QuantityError {}

/// The apiserver's quantity grammar as a regular expression, for the CRD schema.
pub const PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

const SUFFIXES: &[(&str, f64)] = &[
    ("Ki", 1024.0),
    ("Mi", 1_048_576.0),
    ("Gi", 1_073_741_824.0),
    ("Ti", 1_099_511_627_776.0),
    ("Pi", 1_125_899_906_842_624.0),
    ("Ei", 1_152_921_504_606_846_976.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
];

/// Parses a quantity into its value in base units (cores, bytes), following the apiserver's grammar.
pub fn parse(input: &str) -> Result<f64, QuantityError> {
    let err = |reason| QuantityError {
        input: input.to_owned(),
        reason,
    };
    if input.is_empty() {
        return Err(err("it is empty"));
    }
    if input.len() > 64 {
        return Err(err("it is longer than 64 characters"));
    }
    let unsigned = input.strip_prefix(['+', '-']).unwrap_or(input);
    let number_end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err("it does not start with a number"));
    }
    let base: f64 = number.parse().map_err(|_| err("the number is malformed"))?;
    let scale = if suffix.is_empty() {
        1.0
    } else if let Some(&(_, s)) = SUFFIXES.iter().find(|(name, _)| *name == suffix) {
        s
    } else if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
        let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(err("the exponent is malformed"));
        }
        let e: i32 = exp.parse().map_err(|_| err("the exponent is out of range"))?;
        10f64.powi(e)
    } else {
        return Err(err("the suffix is not one of n u m k M G T P E Ki Mi Gi Ti Pi Ei"));
    };
    let value = base * scale;
    if !value.is_finite() {
        return Err(err("it is out of range"));
    }
    Ok(if input.starts_with('-') { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_apiserver_forms() {
        let close = |a: f64, b: f64| (a - b).abs() <= b.abs() * 1e-12;
        assert!(close(parse("250m").expect("valid"), 0.25));
        assert!(close(parse("1.5Gi").expect("valid"), 1.5 * 1_073_741_824.0));
        assert!(close(parse("2e3").expect("valid"), 2000.0));
        assert!(close(parse("512Mi").expect("valid"), 536_870_912.0));
        assert!(close(parse("1").expect("valid"), 1.0));
        assert!(close(parse(".5").expect("valid"), 0.5));
    }

    #[test]
    fn refuses_malformed_quantities() {
        for bad in ["", "abc", "1x", "1.2.3", "1Gb", "Mi", "1e", "--1", "1 Gi", "1e999999"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
