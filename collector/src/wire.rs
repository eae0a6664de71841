//! A borrowed view of an OTLP `ExportMetricsServiceRequest`: what ingest reads, built from
//! decoded prost messages ([`View::of_request`]) or read in place from the protobuf bytes
//! ([`View::of_protobuf`]) without allocating a `String` per attribute.

use crate::store::Attr;
use crate::translate;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, HistogramDataPoint, SummaryDataPoint,
};
use std::borrow::Cow;
use std::ops::Range;

/// A request's resources, scopes, metrics, points and attributes, in request order; each level
/// refers to its children by a range of the next list.
#[derive(Debug, Default)]
pub struct View<'a> {
    pub resources: Vec<ResourceView>,
    pub scopes: Vec<ScopeView<'a>>,
    pub metrics: Vec<MetricView<'a>>,
    pub points: Vec<PointView<'a>>,
    /// Attributes of resources and points, values written as label values.
    pub attrs: Vec<Attr<'a>>,
    /// The encoded `KeyValue` of each of `attrs` ([`View::of_protobuf`] only).
    raw: Vec<&'a [u8]>,
}

#[derive(Debug, Clone)]
pub struct ResourceView {
    pub attrs: Range<usize>,
    pub scopes: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct ScopeView<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub metrics: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct MetricView<'a> {
    pub name: &'a str,
    pub unit: &'a str,
    pub description: &'a str,
    pub data: DataKind,
    pub points: Range<usize>,
}

/// A metric's data type (`None`: the metric has no data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    None,
    Gauge,
    Sum { delta: bool, monotonic: bool },
    Histogram { delta: bool },
    ExponentialHistogram,
    Summary,
}

#[derive(Debug, Clone)]
pub struct PointView<'a> {
    pub attrs: Range<usize>,
    pub value: PointValue<'a>,
}

#[derive(Debug, Clone)]
pub enum PointValue<'a> {
    Number {
        start_unix_nano: u64,
        time_unix_nano: u64,
        /// `None`: the point has no value.
        value: Option<f64>,
        flags: u32,
    },
    Histogram(&'a HistogramDataPoint),
    Summary(&'a SummaryDataPoint),
    /// Exponential histogram points: only counted (as rejected).
    Other,
}

impl<'a> View<'a> {
    /// The attributes in `range` (empty for a range the view does not hold).
    pub fn attrs(&self, range: &Range<usize>) -> &[Attr<'a>] {
        self.attrs.get(range.clone()).unwrap_or(&[])
    }

    fn push_kvs(&mut self, kvs: &'a [KeyValue]) -> Range<usize> {
        let start = self.attrs.len();
        self.attrs
            .extend(kvs.iter().map(|kv| (kv.key.as_str(), label_value(kv))));
        start..self.attrs.len()
    }

    /// The view of a decoded request.
    pub fn of_request(request: &'a ExportMetricsServiceRequest) -> Self {
        let mut view = View::default();
        for rm in &request.resource_metrics {
            let attrs = view.push_kvs(rm.resource.as_ref().map_or(&[], |r| &r.attributes));
            let scopes_start = view.scopes.len();
            for sm in &rm.scope_metrics {
                let metrics_start = view.metrics.len();
                for metric in &sm.metrics {
                    let points_start = view.points.len();
                    let data = match &metric.data {
                        None => DataKind::None,
                        Some(Data::Gauge(g)) => {
                            view.push_numbers(&g.data_points);
                            DataKind::Gauge
                        }
                        Some(Data::Sum(s)) => {
                            view.push_numbers(&s.data_points);
                            DataKind::Sum {
                                delta: is_delta(s.aggregation_temporality),
                                monotonic: s.is_monotonic,
                            }
                        }
                        Some(Data::Histogram(h)) => {
                            for p in &h.data_points {
                                let attrs = view.push_kvs(&p.attributes);
                                view.points.push(PointView {
                                    attrs,
                                    value: PointValue::Histogram(p),
                                });
                            }
                            DataKind::Histogram {
                                delta: is_delta(h.aggregation_temporality),
                            }
                        }
                        Some(Data::ExponentialHistogram(h)) => {
                            for p in &h.data_points {
                                let attrs = view.push_kvs(&p.attributes);
                                view.points.push(PointView {
                                    attrs,
                                    value: PointValue::Other,
                                });
                            }
                            DataKind::ExponentialHistogram
                        }
                        Some(Data::Summary(s)) => {
                            for p in &s.data_points {
                                let attrs = view.push_kvs(&p.attributes);
                                view.points.push(PointView {
                                    attrs,
                                    value: PointValue::Summary(p),
                                });
                            }
                            DataKind::Summary
                        }
                    };
                    view.metrics.push(MetricView {
                        name: &metric.name,
                        unit: &metric.unit,
                        description: &metric.description,
                        data,
                        points: points_start..view.points.len(),
                    });
                }
                let (name, version) = sm
                    .scope
                    .as_ref()
                    .map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
                view.scopes.push(ScopeView {
                    name,
                    version,
                    metrics: metrics_start..view.metrics.len(),
                });
            }
            view.resources.push(ResourceView {
                attrs,
                scopes: scopes_start..view.scopes.len(),
            });
        }
        view
    }

    fn push_numbers(
        &mut self,
        points: &'a [opentelemetry_proto::tonic::metrics::v1::NumberDataPoint],
    ) {
        for p in points {
            let attrs = self.push_kvs(&p.attributes);
            let value = match p.value {
                Some(number_data_point::Value::AsDouble(v)) => Some(v),
                Some(number_data_point::Value::AsInt(v)) => Some(v as f64),
                None => None,
            };
            self.points.push(PointView {
                attrs,
                value: PointValue::Number {
                    start_unix_nano: p.start_time_unix_nano,
                    time_unix_nano: p.time_unix_nano,
                    value,
                    flags: p.flags,
                },
            });
        }
    }

    /// The view of an encoded request, when it has the common shape: gauges and sums of number
    /// points whose attributes are strings, every field at most once, no unknown fields, no
    /// exemplars. `None` otherwise, malformed bytes included: decode those with prost, whose
    /// errors and semantics stay the reference. What it accepts it reads exactly as prost would
    /// (the same fields, UTF-8 checked, the same varint rules).
    pub fn of_protobuf(bytes: &'a [u8]) -> Option<Self> {
        // Room for the usual shape (a string attribute takes 20 - 100 encoded bytes, a point
        // with its attributes 100 - 400), so that a large request's lists are not grown (and
        // copied) several times; unusual shapes grow them as needed.
        let mut view = View {
            attrs: Vec::with_capacity(bytes.len() / 32),
            raw: Vec::with_capacity(bytes.len() / 32),
            points: Vec::with_capacity(bytes.len() / 200),
            ..View::default()
        };
        let mut r = Reader(bytes);
        while !r.is_empty() {
            match r.key()? {
                (1, LEN) => view.resource_metrics(r.bytes()?)?,
                _ => return None,
            }
        }
        Some(view)
    }

    fn resource_metrics(&mut self, bytes: &'a [u8]) -> Option<()> {
        let mut r = Reader(bytes);
        let mut attrs = self.attrs.len()..self.attrs.len();
        let mut resource = false;
        let mut schema = false;
        let scopes_start = self.scopes.len();
        while !r.is_empty() {
            match r.key()? {
                (1, LEN) if !resource => {
                    resource = true;
                    attrs = self.resource(r.bytes()?)?;
                }
                (2, LEN) => self.scope_metrics(r.bytes()?)?,
                (3, LEN) if !schema => {
                    schema = true;
                    r.str()?;
                }
                _ => return None,
            }
        }
        self.resources.push(ResourceView {
            attrs,
            scopes: scopes_start..self.scopes.len(),
        });
        Some(())
    }

    fn resource(&mut self, bytes: &'a [u8]) -> Option<Range<usize>> {
        let mut r = Reader(bytes);
        let start = self.attrs.len();
        let mut dropped = false;
        while !r.is_empty() {
            match r.key()? {
                (1, LEN) => {
                    let bytes = r.bytes()?;
                    self.attrs.push(key_value(bytes)?);
                    self.raw.push(bytes);
                }
                (2, VARINT) if !dropped => {
                    dropped = true;
                    r.varint()?;
                }
                _ => return None,
            }
        }
        Some(start..self.attrs.len())
    }

    fn scope_metrics(&mut self, bytes: &'a [u8]) -> Option<()> {
        let mut r = Reader(bytes);
        let (mut name, mut version) = ("", "");
        let mut scope = false;
        let mut schema = false;
        let metrics_start = self.metrics.len();
        while !r.is_empty() {
            match r.key()? {
                (1, LEN) if !scope => {
                    scope = true;
                    (name, version) = instrumentation_scope(r.bytes()?)?;
                }
                (2, LEN) => self.metric(r.bytes()?)?,
                (3, LEN) if !schema => {
                    schema = true;
                    r.str()?;
                }
                _ => return None,
            }
        }
        self.scopes.push(ScopeView {
            name,
            version,
            metrics: metrics_start..self.metrics.len(),
        });
        Some(())
    }

    fn metric(&mut self, bytes: &'a [u8]) -> Option<()> {
        let mut r = Reader(bytes);
        let (mut name, mut description, mut unit) = (None, None, None);
        let mut data = DataKind::None;
        let points_start = self.points.len();
        while !r.is_empty() {
            match r.key()? {
                (1, LEN) if name.is_none() => name = Some(r.str()?),
                (2, LEN) if description.is_none() => description = Some(r.str()?),
                (3, LEN) if unit.is_none() => unit = Some(r.str()?),
                (5, LEN) if data == DataKind::None => {
                    self.number_points(r.bytes()?, false)?;
                    data = DataKind::Gauge;
                }
                (7, LEN) if data == DataKind::None => {
                    let (delta, monotonic) = self.number_points(r.bytes()?, true)?;
                    data = DataKind::Sum { delta, monotonic };
                }
                _ => return None,
            }
        }
        self.metrics.push(MetricView {
            name: name.unwrap_or(""),
            unit: unit.unwrap_or(""),
            description: description.unwrap_or(""),
            data,
            points: points_start..self.points.len(),
        });
        Some(())
    }

    /// A `Gauge` (`sum` false) or a `Sum`: its points; for a sum (delta, monotonic).
    fn number_points(&mut self, bytes: &'a [u8], sum: bool) -> Option<(bool, bool)> {
        let mut r = Reader(bytes);
        let (mut temporality, mut monotonic) = (None, None);
        while !r.is_empty() {
            match r.key()? {
                (1, LEN) => self.number_point(r.bytes()?)?,
                (2, VARINT) if sum && temporality.is_none() => {
                    temporality = Some(r.varint()? as i32);
                }
                (3, VARINT) if sum && monotonic.is_none() => monotonic = Some(r.varint()? != 0),
                _ => return None,
            }
        }
        Some((
            is_delta(temporality.unwrap_or(0)),
            monotonic.unwrap_or(false),
        ))
    }

    fn number_point(&mut self, bytes: &'a [u8]) -> Option<()> {
        let mut r = Reader(bytes);
        let start = self.attrs.len();
        // The previous point's attributes: points of one metric mostly repeat their keys (and
        // many values) in the same order, so an attribute whose bytes equal the previous
        // point's at the same position is that attribute again (read and checked once), and
        // one whose key or value bytes equal the previous one's reuses that text.
        let previous = self.points.last().map_or(start..start, |p| p.attrs.clone());
        let (mut start_time, mut time, mut flags) = (None, None, None);
        let mut value = None;
        while !r.is_empty() {
            match r.key()? {
                (7, LEN) => {
                    let bytes = r.bytes()?;
                    let at = previous.start + (self.attrs.len() - start);
                    let same = if at < previous.end {
                        self.attrs.get(at).zip(self.raw.get(at))
                    } else {
                        None
                    };
                    let kv = match same {
                        Some((kv, raw)) if *raw == bytes => kv.clone(),
                        _ => key_value_like(bytes, same.map(|(kv, _)| kv))?,
                    };
                    self.attrs.push(kv);
                    self.raw.push(bytes);
                }
                (2, FIXED64) if start_time.is_none() => start_time = Some(r.fixed64()?),
                (3, FIXED64) if time.is_none() => time = Some(r.fixed64()?),
                (4, FIXED64) if value.is_none() => value = Some(f64::from_bits(r.fixed64()?)),
                (6, FIXED64) if value.is_none() => value = Some(r.fixed64()? as i64 as f64),
                (8, VARINT) if flags.is_none() => flags = Some(r.varint()? as u32),
                _ => return None,
            }
        }
        self.points.push(PointView {
            attrs: start..self.attrs.len(),
            value: PointValue::Number {
                start_unix_nano: start_time.unwrap_or(0),
                time_unix_nano: time.unwrap_or(0),
                value,
                flags: flags.unwrap_or(0),
            },
        });
        Some(())
    }
}

fn is_delta(temporality: i32) -> bool {
    temporality == AggregationTemporality::Delta as i32
}

/// An attribute's value as a label value, borrowed when it is a string.
pub fn label_value(kv: &KeyValue) -> Cow<'_, str> {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Cow::Borrowed(s),
        _ => Cow::Owned(translate::value_string(kv.value.as_ref())),
    }
}

/// A `KeyValue` whose value is a string.
fn key_value(bytes: &[u8]) -> Option<Attr<'_>> {
    key_value_like(bytes, None)
}

/// A `KeyValue` whose value is a string; where its key or value has the same bytes as the
/// key or value of `like`, that text is returned instead of checking the bytes again (same
/// text: only which copy of it is borrowed differs).
fn key_value_like<'a>(bytes: &'a [u8], like: Option<&Attr<'a>>) -> Option<Attr<'a>> {
    let mut r = Reader(bytes);
    let (mut key, mut value) = (None, None);
    let (like_key, like_value) = match like {
        Some((k, Cow::Borrowed(v))) => (Some(*k), Some(*v)),
        Some((k, Cow::Owned(_))) => (Some(*k), None),
        None => (None, None),
    };
    while !r.is_empty() {
        match r.key()? {
            (1, LEN) if key.is_none() => key = Some(same_or_str(r.bytes()?, like_key)?),
            (2, LEN) if value.is_none() => value = Some(any_string(r.bytes()?, like_value)?),
            _ => return None,
        }
    }
    Some((key.unwrap_or(""), Cow::Borrowed(value?)))
}

/// `bytes` as text: `like` when it has the same bytes, otherwise checked as UTF-8.
#[inline]
fn same_or_str<'a>(bytes: &'a [u8], like: Option<&'a str>) -> Option<&'a str> {
    match like {
        Some(like) if like.as_bytes() == bytes => Some(like),
        _ => std::str::from_utf8(bytes).ok(),
    }
}

/// An `AnyValue` holding a string (see [`same_or_str`] for `like`).
fn any_string<'a>(bytes: &'a [u8], like: Option<&'a str>) -> Option<&'a str> {
    let mut r = Reader(bytes);
    let mut value = None;
    while !r.is_empty() {
        match r.key()? {
            (1, LEN) if value.is_none() => value = Some(same_or_str(r.bytes()?, like)?),
            _ => return None,
        }
    }
    value
}

/// An `InstrumentationScope`: (name, version); its attributes are checked, not kept.
fn instrumentation_scope(bytes: &[u8]) -> Option<(&str, &str)> {
    let mut r = Reader(bytes);
    let (mut name, mut version, mut dropped) = (None, None, false);
    while !r.is_empty() {
        match r.key()? {
            (1, LEN) if name.is_none() => name = Some(r.str()?),
            (2, LEN) if version.is_none() => version = Some(r.str()?),
            (3, LEN) => {
                key_value(r.bytes()?)?;
            }
            (4, VARINT) if !dropped => {
                dropped = true;
                r.varint()?;
            }
            _ => return None,
        }
    }
    Some((name.unwrap_or(""), version.unwrap_or("")))
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// Reads protobuf wire format from a byte slice, borrowing what it returns.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[inline]
    fn varint(&mut self) -> Option<u64> {
        // One byte (field keys, short lengths): the common case, without prost's call.
        if let Some((&b, tail)) = self.0.split_first() {
            if b < 0x80 {
                self.0 = tail;
                return Some(u64::from(b));
            }
        }
        prost::encoding::decode_varint(&mut self.0).ok()
    }

    /// A field key: (field number, wire type), with prost's rules for valid keys.
    #[inline]
    fn key(&mut self) -> Option<(u32, u8)> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return None;
        }
        let tag = (key >> 3) as u32;
        if tag == 0 {
            return None;
        }
        Some((tag, (key & 7) as u8))
    }

    #[inline]
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(len);
        self.0 = tail;
        Some(head)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn fixed64(&mut self) -> Option<u64> {
        let (head, tail) = self.0.split_first_chunk::<8>()?;
        self.0 = tail;
        Some(u64::from_le_bytes(*head))
    }
}
