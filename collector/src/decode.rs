//! Request body decoding shared by the receivers and the fuzz harness: bounded gzip
//! decompression, OTLP protobuf, and OTLP/JSON with the checks the generated serde code lacks
//! ([`json`]).

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, Gauge, Histogram, Sum, Summary,
};
use prost::Message;
use std::io::Read;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than the cap (after decompression).
    #[error("request body exceeds the limit of {limit} bytes after decompression")]
    TooLarge { limit: usize },
    #[error("invalid gzip body: {0}")]
    Gzip(String),
    #[error("invalid OTLP protobuf: {0}")]
    Protobuf(String),
    #[error("invalid OTLP/JSON: {0}")]
    Json(String),
}

/// Decompresses gzip, reading at most `limit` bytes of output (gzip bombs stop there).
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let mut decoder = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Gzip(e.to_string()))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}

/// Decodes an OTLP protobuf `ExportMetricsServiceRequest`.
pub fn protobuf(body: &[u8]) -> Result<ExportMetricsServiceRequest, DecodeError> {
    ExportMetricsServiceRequest::decode(body).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

/// The metric data keys of OTLP/JSON.
const DATA_KEYS: [&str; 5] = [
    "gauge",
    "sum",
    "histogram",
    "exponentialHistogram",
    "summary",
];

/// Decodes an OTLP/JSON `ExportMetricsServiceRequest`; a metric whose data does not decode is an
/// error naming its path, never a silently dropped metric. (The serde code of
/// `opentelemetry-proto` reads a metric's data, `"sum": {...}`, through a flattened `Option`,
/// which turns any error inside it into "no data": a sum whose `aggregationTemporality` is
/// given by name would silently vanish.)
pub fn json(body: &[u8]) -> Result<ExportMetricsServiceRequest, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    if !value.is_object() {
        return Err(DecodeError::Json("the body must be a JSON object".into()));
    }
    let request: ExportMetricsServiceRequest =
        serde_json::from_value(value.clone()).map_err(|e| DecodeError::Json(e.to_string()))?;
    for (i, rm) in request.resource_metrics.iter().enumerate() {
        for (j, sm) in rm.scope_metrics.iter().enumerate() {
            for (k, metric) in sm.metrics.iter().enumerate() {
                if metric.data.is_some() {
                    continue;
                }
                let raw = &value["resourceMetrics"][i]["scopeMetrics"][j]["metrics"][k];
                for key in DATA_KEYS {
                    let Some(data) = raw.get(key) else { continue };
                    let path = format!("resourceMetrics[{i}].scopeMetrics[{j}].metrics[{k}].{key}");
                    let err = data_error(key, data).unwrap_or_else(|| {
                        "does not decode (several data fields, or a wrong type)".to_string()
                    });
                    return Err(DecodeError::Json(format!(
                        "{path} (metric {:?}): {err}; OTLP/JSON enums must be integers",
                        metric.name
                    )));
                }
            }
        }
    }
    Ok(request)
}

/// The error of decoding one metric data object on its own.
fn data_error(key: &str, data: &serde_json::Value) -> Option<String> {
    fn err<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Option<String> {
        serde_json::from_value::<T>(v.clone())
            .err()
            .map(|e| e.to_string())
    }
    match key {
        "gauge" => err::<Gauge>(data),
        "sum" => err::<Sum>(data),
        "histogram" => err::<Histogram>(data),
        "exponentialHistogram" => err::<ExponentialHistogram>(data),
        "summary" => err::<Summary>(data),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    #[test]
    fn enum_names_are_a_clear_error() {
        let body = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
            {"name":"ok","gauge":{"dataPoints":[{"asDouble":1}]}},
            {"name":"e","sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE",
             "isMonotonic":true,"dataPoints":[{"asInt":"5"}]}}]}]}]}"#;
        let err = json(body).unwrap_err().to_string();
        assert!(
            err.contains("resourceMetrics[0].scopeMetrics[0].metrics[1].sum (metric \"e\")"),
            "{err}"
        );
        assert!(err.contains("AGGREGATION_TEMPORALITY_CUMULATIVE"), "{err}");
    }

    #[test]
    fn json_integers_as_strings_and_numbers() {
        let body = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
            {"name":"s","unknownKey":1,"sum":{"aggregationTemporality":2,"isMonotonic":true,
             "dataPoints":[{"asInt":"5","timeUnixNano":"1700000000000000000"},
                           {"asInt":6,"timeUnixNano":1700000000000000001}]}}]}]}]}"#;
        let req = json(body).unwrap();
        let metric = &req.resource_metrics[0].scope_metrics[0].metrics[0];
        let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(sum)) = &metric.data
        else {
            panic!("no sum: {metric:?}");
        };
        assert_eq!(sum.data_points.len(), 2);
        assert_eq!(sum.data_points[0].time_unix_nano, 1_700_000_000_000_000_000);
    }

    #[test]
    fn not_an_object() {
        assert!(json(b"[1]").is_err());
        assert!(json(b"{").is_err());
        assert!(json(b"{}").unwrap().resource_metrics.is_empty());
    }

    #[test]
    fn gzip_bomb_is_bounded() {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        assert_eq!(
            gunzip(&bomb, 4 << 20),
            Err(DecodeError::TooLarge { limit: 4 << 20 })
        );
        assert_eq!(gunzip(&bomb, 64 << 20).unwrap().len(), 64 << 20);
        assert!(matches!(gunzip(b"not gzip", 10), Err(DecodeError::Gzip(_))));
    }

    #[test]
    fn truncated_protobuf_is_an_error() {
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![Default::default()],
        };
        let mut bytes = req.encode_to_vec();
        bytes.push(0x0a);
        assert!(protobuf(&bytes).is_err());
        assert!(protobuf(&[]).unwrap().resource_metrics.is_empty());
    }
}
