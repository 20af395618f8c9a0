//! Results: one figure per row, always next to its same-run baseline, printed as a table and
//! optionally written as JSON. Targets are notes, never pass/fail assertions.

use serde_json::{json, Map, Value};

/// A target a figure is compared against (informational only).
pub struct Target {
    pub text: String,
    pub met: bool,
}

/// One measured figure.
pub struct Row {
    pub id: &'static str,
    pub label: String,
    pub unit: &'static str,
    /// What was measured (`envd`, `wrenn`, ...): the column heading and the JSON key of `value`.
    pub subject: &'static str,
    pub value: f64,
    pub baseline: f64,
    /// Samples per side behind the figure.
    pub samples: usize,
    pub target: Option<Target>,
    /// Extra text at the end of the printed line.
    pub note: String,
    /// Extra fields for the JSON output.
    pub extra: Map<String, Value>,
}

impl Row {
    pub fn new(
        id: &'static str,
        label: &str,
        unit: &'static str,
        value: f64,
        baseline: f64,
    ) -> Self {
        Self {
            id,
            label: label.to_owned(),
            unit,
            subject: "envd",
            value,
            baseline,
            samples: 1,
            target: None,
            note: String::new(),
            extra: Map::new(),
        }
    }

    pub fn ratio(&self) -> f64 {
        if self.baseline > 0.0 {
            self.value / self.baseline
        } else {
            f64::NAN
        }
    }

    fn show(&self, v: f64) -> String {
        match self.unit {
            "MB/s" => format!("{v:.0} {}", self.unit),
            "MiB" => format!("{v:.1} {}", self.unit),
            _ => format!("{v:.2} {}", self.unit),
        }
    }

    pub fn line(&self) -> String {
        let mut line = format!(
            "{:<22} {} {:>11}   baseline {:>11}   ratio {:>5.2}x",
            self.label,
            self.subject,
            self.show(self.value),
            self.show(self.baseline),
            self.ratio()
        );
        if !self.note.is_empty() {
            line.push_str("   ");
            line.push_str(&self.note);
        }
        if let Some(t) = &self.target {
            let verdict = if t.met { "met" } else { "NOT met" };
            line.push_str(&format!("   (target {}: {verdict})", t.text));
        }
        line
    }

    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("id".into(), json!(self.id));
        obj.insert("label".into(), json!(self.label));
        obj.insert("unit".into(), json!(self.unit));
        obj.insert(self.subject.into(), json!(self.value));
        obj.insert("baseline".into(), json!(self.baseline));
        obj.insert("ratio".into(), json!(self.ratio()));
        obj.insert("samples".into(), json!(self.samples));
        if let Some(t) = &self.target {
            obj.insert("target".into(), json!(t.text));
            obj.insert("target_met".into(), json!(t.met));
        }
        obj.extend(self.extra.clone());
        Value::Object(obj)
    }
}

/// The nearest-rank percentile `p` (0-100] of `samples`.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 100.0);
        assert_eq!(percentile(&v, 99.0), 198.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
    }
}
