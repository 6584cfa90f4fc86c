//! Gauge families kept as label values → value, turned into Prometheus' model only when scraped.
//!
//! Written by hand because prometheus' `GaugeVec` keeps, in every series, its own copy of the
//! family's descriptor (name, help, label names) and of its label pairs as owned strings, and a
//! policy has about seven series. Here a series is its label values and an `f64`; the descriptor
//! exists once per family (docs/performance.md has the operator's memory before and after).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// Label values, in the order of the family's label names.
type Key = Box<[Box<str>]>;

fn key(values: &[&str]) -> Key {
    values.iter().map(|v| Box::from(*v)).collect()
}

/// A family of gauges with the same label names; cheap to clone (shared).
#[derive(Clone)]
pub struct Gauges {
    desc: Arc<Desc>,
    series: Arc<Mutex<BTreeMap<Key, f64>>>,
}

/// The labels of one series, for [`Gauges::retain`].
pub struct Labels<'a> {
    names: &'a [String],
    values: &'a [Box<str>],
}

impl Labels<'_> {
    /// The value of the label `name`, if the family has it.
    pub fn get(&self, name: &str) -> Option<&str> {
        let i = self.names.iter().position(|n| n == name)?;
        self.values.get(i).map(|v| &**v)
    }
}

/// One series of a family, named by its label values; see [`Gauges::with_label_values`].
pub struct Series<'a> {
    family: &'a Gauges,
    values: &'a [&'a str],
}

impl Series<'_> {
    /// Sets the series' value, creating the series.
    pub fn set(&self, value: f64) {
        self.family.set(self.values, value);
    }
}

impl Gauges {
    pub fn new(name: &str, help: &str, labels: &[&str]) -> Result<Self, prometheus::Error> {
        let desc = Desc::new(
            name.to_owned(),
            help.to_owned(),
            labels.iter().map(|l| (*l).to_owned()).collect(),
            std::collections::HashMap::new(),
        )?;
        Ok(Self {
            desc: Arc::new(desc),
            series: Arc::default(),
        })
    }

    /// The series of `values` (as many as the family has labels), as `GaugeVec` names it.
    pub fn with_label_values<'a>(&'a self, values: &'a [&'a str]) -> Series<'a> {
        Series {
            family: self,
            values,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, f64>> {
        // A panic while holding the lock leaves a map that is still whole: keep using it.
        self.series.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the series of `values`. Values of the wrong arity are ignored (and logged): a
    /// metric is never worth a panic.
    pub fn set(&self, values: &[&str], value: f64) {
        if values.len() != self.desc.variable_labels.len() {
            tracing::warn!(metric = %self.desc.fq_name, "{} label values for {} labels", values.len(), self.desc.variable_labels.len());
            return;
        }
        self.lock().insert(key(values), value);
    }

    /// Removes the series of `values`; whether it existed.
    pub fn remove_label_values(&self, values: &[&str]) -> bool {
        self.lock().remove(&key(values)).is_some()
    }

    /// Keeps the series for which `keep` holds; returns how many were removed.
    pub fn retain(&self, mut keep: impl FnMut(&Labels<'_>) -> bool) -> usize {
        let names = &self.desc.variable_labels;
        let mut series = self.lock();
        let before = series.len();
        series.retain(|values, _| keep(&Labels { names, values }));
        before - series.len()
    }
}

impl Collector for Gauges {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let names = &self.desc.variable_labels;
        let metrics = self
            .lock()
            .iter()
            .map(|(values, value)| {
                // Label pairs sorted by name, as prometheus' own values are.
                let mut labels: Vec<LabelPair> = names
                    .iter()
                    .zip(values.iter())
                    .map(|(n, v)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(n.clone());
                        pair.set_value(v.to_string());
                        pair
                    })
                    .collect();
                labels.sort_by(|a, b| a.name().cmp(b.name()));
                let mut gauge = Gauge::default();
                gauge.set_value(*value);
                let mut metric = Metric::from_gauge(gauge);
                metric.set_label(labels);
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::GAUGE);
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
impl Gauges {
    fn get(&self, values: &[&str]) -> Option<f64> {
        self.lock().get(&key(values)).copied()
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_set_replaced_removed_and_rendered_like_prometheus_own() {
        let g = Gauges::new("t_seconds", "A test gauge", &["namespace", "policy"]).unwrap();
        g.with_label_values(&["a", "shop"]).set(1.0);
        g.with_label_values(&["a", "shop"]).set(2.5);
        g.set(&["b", "shop"], 3.0);
        g.set(&["only-one"], 9.0);
        assert_eq!(g.len(), 2, "a wrong arity is ignored");
        assert_eq!(g.get(&["a", "shop"]), Some(2.5));
        let registry = prometheus::Registry::new();
        registry.register(Box::new(g.clone())).unwrap();
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut text)
            .unwrap();
        assert_eq!(
            text,
            "# HELP t_seconds A test gauge\n# TYPE t_seconds gauge\n\
             t_seconds{namespace=\"a\",policy=\"shop\"} 2.5\n\
             t_seconds{namespace=\"b\",policy=\"shop\"} 3\n"
        );
        assert!(g.remove_label_values(&["a", "shop"]));
        assert!(!g.remove_label_values(&["a", "shop"]));
        assert_eq!(g.retain(|l| l.get("namespace") != Some("b")), 1);
        assert_eq!(g.len(), 0);
    }
}
