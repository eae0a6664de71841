//! End-to-end tests of the whole pipeline on one host: the three clusters of the reference
//! multi-cluster deployment (deploy/README.md: `hub`, `cluster1`, `cluster2`) as network namespaces
//! joined by veth links to a bridge, running the real `kepler-rs` and `kepler-collector` binaries
//! and a real Prometheus. Everything lives in `tests/` (integration tests) and `tests/common/` (the
//! namespace harness); this library is empty.
