//! The analysis gate: one PromQL instant query against the configured Prometheus, its result checked against
//! the Blueprint's bounds. Plain `http://` only (an in-cluster Prometheus); parsing and judging are pure.

use std::time::Duration;

use plinth_api::rollout::Analysis as AnalysisSpec;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::plan::Analysis;

/// Longest wait for Prometheus.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_BODY: u64 = 1 << 20;

/// The query with `{{blueprint}}` and `{{revision}}` replaced.
pub fn query(spec: &AnalysisSpec, blueprint: &str, revision: i64) -> String {
    spec.query
        .replace("{{blueprint}}", blueprint)
        .replace("{{revision}}", &revision.to_string())
}

/// Percent-encodes a query parameter.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The number an instant query answered: the first sample of a vector, or a scalar. `Ok(None)` when empty.
pub fn parse(body: &str) -> Result<Option<f64>, String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "Prometheus answered {}: {}",
            v["errorType"].as_str().unwrap_or("an error"),
            v["error"].as_str().unwrap_or("no message")
        ));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => match data["result"].as_array().and_then(|r| r.first()) {
            Some(first) => &first["value"],
            None => return Ok(None),
        },
        Some("scalar") => &data["result"],
        other => {
            return Err(format!(
                "the query returns a {}, not a number",
                other.unwrap_or("nothing")
            ));
        }
    };
    let text = sample[1].as_str().ok_or_else(|| "the sample has no value".to_owned())?;
    text.parse::<f64>()
        .map(Some)
        .map_err(|e| format!("the value {text:?} is not a number: {e}"))
}

/// The gate's verdict on a result.
pub fn judge(spec: &AnalysisSpec, query: &str, value: Result<Option<f64>, String>) -> Analysis {
    match value {
        Err(e) => Analysis::Failed(format!("{query}: {e}")),
        Ok(None) => Analysis::Pending(format!("{query} returned no samples yet")),
        Ok(Some(v)) if v.is_nan() => Analysis::Pending(format!("{query} = NaN")),
        Ok(Some(v)) => {
            if let Some(max) = spec.max.filter(|m| v > *m) {
                Analysis::Failed(format!("{query} = {v}, above the maximum {max}"))
            } else if let Some(min) = spec.min.filter(|m| v < *m) {
                Analysis::Failed(format!("{query} = {v}, below the minimum {min}"))
            } else {
                Analysis::Passed(format!("{query} = {v}"))
            }
        }
    }
}

/// Runs the query against `base` (`http://host:port`) and judges it. An unreachable Prometheus is a pending result, not a failure: the step's health deadline still applies.
pub async fn evaluate(base: &str, spec: &AnalysisSpec, blueprint: &str, revision: i64) -> Analysis {
    let q = query(spec, blueprint, revision);
    match tokio::time::timeout(TIMEOUT, get(base, &format!("/api/v1/query?query={}", encode(&q)))).await {
        Ok(Ok(body)) => judge(spec, &q, parse(&body)),
        Ok(Err(e)) => Analysis::Pending(format!("cannot ask Prometheus at {base}: {e}")),
        Err(_) => Analysis::Pending(format!(
            "Prometheus at {base} did not answer within {}s",
            TIMEOUT.as_secs()
        )),
    }
}

/// A minimal HTTP/1.0 GET, the body as text.
async fn get(base: &str, path_and_query: &str) -> Result<String, String> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base}: only http:// addresses are supported"))?;
    let (authority, prefix) = match rest.split_once('/') {
        Some((a, p)) => (a, format!("/{}", p.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let request =
        format!("GET {prefix}{path_and_query} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut bytes = Vec::new();
    stream
        .take(MAX_BODY)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "not an HTTP answer".to_owned())?;
    let status = head.lines().next().unwrap_or_default();
    // Prometheus answers errors (400, 422, 503) with a JSON body that says why; `parse` reports it.
    if !status.contains(" 200 ") && !body.trim_start().starts_with('{') {
        return Err(format!("HTTP {status}"));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max: Option<f64>, min: Option<f64>) -> AnalysisSpec {
        AnalysisSpec {
            query: "errors{revision=\"{{revision}}\",bp=\"{{blueprint}}\"}".into(),
            max,
            min,
        }
    }

    #[test]
    fn the_query_names_the_blueprint_and_revision_and_is_encoded() {
        let q = query(&spec(None, None), "web", 3);
        assert_eq!(q, "errors{revision=\"3\",bp=\"web\"}");
        assert_eq!(encode("a b{c}=\"1\""), "a%20b%7Bc%7D%3D%221%22");
    }

    #[test]
    fn vectors_and_scalars_are_read() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"0.25"]}]}}"#;
        assert_eq!(parse(vector), Ok(Some(0.25)));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"7"]}}"#;
        assert_eq!(parse(scalar), Ok(Some(7.0)));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse(empty), Ok(None));
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert!(parse(error).is_err_and(|e| e.contains("bad_data") && e.contains("parse error")));
    }

    #[test]
    fn bounds_decide() {
        assert!(matches!(
            judge(&spec(Some(1.0), None), "q", Ok(Some(0.5))),
            Analysis::Passed(_)
        ));
        assert!(
            matches!(judge(&spec(Some(1.0), None), "q", Ok(Some(1.5))), Analysis::Failed(m) if m.contains("above the maximum 1"))
        );
        assert!(
            matches!(judge(&spec(None, Some(0.99)), "q", Ok(Some(0.9))), Analysis::Failed(m) if m.contains("below the minimum"))
        );
        assert!(matches!(
            judge(&spec(Some(1.0), None), "q", Ok(None)),
            Analysis::Pending(_)
        ));
        assert!(matches!(
            judge(&spec(Some(1.0), None), "q", Err("bad".into())),
            Analysis::Failed(_)
        ));
    }
}
