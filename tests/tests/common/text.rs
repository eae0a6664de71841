//! Prometheus text exposition parsed into samples (the workspace's one parser).

pub use kepler_test_support::text::{parse_labels, parse_text, SeriesKey};
