//! Asking a real Prometheus: the instant-query path for a PromQL expression, the result array of
//! its answer, and the parts of a vector sample. The transport is the caller's (loopback, or
//! `curl` inside a network namespace).

use serde_json::Value;

/// `/api/v1/query?query=<promql, percent-encoded>`.
pub fn query_path(promql: &str) -> String {
    format!("/api/v1/query?query={}", percent_encode(promql))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `data.result` array of a successful query answer; panics (naming `promql`) on an answer
/// that is not JSON or not `"status": "success"`.
pub fn results(promql: &str, body: &str) -> Vec<Value> {
    let answer: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{promql}: answer is not JSON ({e}): {body}"));
    assert_eq!(answer["status"], "success", "{promql}: {body}");
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The value of a vector sample (`"value": [time, "1.5"]`).
pub fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a vector sample: {sample}"))
}

/// A label of a vector sample.
pub fn sample_label<'a>(sample: &'a Value, name: &str) -> Option<&'a str> {
    sample["metric"][name].as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_encoded_and_its_answer_read() {
        assert_eq!(
            query_path("sum by (cluster)(rate(x{a=\"b\"}[5m]))"),
            "/api/v1/query?query=sum%20by%20%28cluster%29%28rate%28x%7Ba%3D%22b%22%7D%5B5m%5D%29%29"
        );
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"cluster":"hub"},"value":[1,"2.5"]}]}}"#;
        let samples = results("q", body);
        assert_eq!(samples.len(), 1);
        assert_eq!(sample_value(&samples[0]), 2.5);
        assert_eq!(sample_label(&samples[0], "cluster"), Some("hub"));
        assert_eq!(sample_label(&samples[0], "job"), None);
    }
}
