//! The operator's policy on dedicated clusters: which images tenants may run and how large their
//! own brokers may get (replicas, CPU, memory, storage). Set by the cluster admin through the
//! operator's flags (the chart's `policy.dedicated` values); an instance outside it gets
//! `InvalidSpec` with reason `OutsideOperatorPolicy`, and nothing of it is applied.
//!
//! Quantities are parsed here: the only crate for it has a single 0.1 release and no
//! maintenance, and the rule (decimal or binary suffix, `m` for milli) is a few lines.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tiermq_crd::DedicatedSpec;

/// The bounds of a dedicated cluster; every unset one is unbounded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DedicatedBounds {
    /// Image prefixes a dedicated cluster may run (e.g. `rabbitmq:` or `registry.corp/rabbitmq:`);
    /// empty allows any image.
    pub images: Vec<String>,
    /// Most broker nodes per dedicated cluster.
    pub max_replicas: Option<i32>,
    /// Most CPU per broker container (requests and limits), in cores.
    pub max_cpu: Option<Bound>,
    /// Most memory per broker container (requests and limits), in bytes.
    pub max_memory: Option<Bound>,
    /// Largest volume per broker node, in bytes.
    pub max_storage: Option<Bound>,
}

/// A bound as given (for messages) and as a number (for comparing).
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    /// The quantity as written, e.g. `4Gi`.
    pub text: String,
    /// Its value in base units (cores, bytes).
    pub value: f64,
}

impl Bound {
    /// Parses a Kubernetes quantity (`500m`, `2`, `1.5Gi`, `10G`).
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(Self {
            text: text.to_string(),
            value: parse_quantity(text)?,
        })
    }
}

/// The value of a Kubernetes quantity in base units: binary suffixes (`Ki`…`Ei`), decimal ones
/// (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`) and exponents (`1e3`).
pub fn parse_quantity(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let bad = || format!("{text:?} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)");
    let n: f64 = number.parse().map_err(|_| bad())?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().map_err(|_| bad())?;
            10f64.powi(e)
        }
        _ => return Err(bad()),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(bad());
    }
    Ok(n * scale)
}

impl DedicatedBounds {
    /// Every way `spec` is outside the bounds, one line each; empty when it is within them.
    pub fn violations(&self, spec: &DedicatedSpec) -> Vec<String> {
        let mut out = Vec::new();
        if !self.images.is_empty() && !self.images.iter().any(|p| spec.image.starts_with(p)) {
            out.push(format!(
                "spec.dedicated.image {:?} does not start with an allowed prefix ({})",
                spec.image,
                self.images.join(", ")
            ));
        }
        if let Some(max) = self.max_replicas
            && spec.replicas > max
        {
            out.push(format!(
                "spec.dedicated.replicas {} is above the most allowed, {max}",
                spec.replicas
            ));
        }
        let resources = spec.resources.as_ref();
        for (name, bound) in [("cpu", &self.max_cpu), ("memory", &self.max_memory)] {
            let Some(bound) = bound else { continue };
            let sets = [
                ("requests", resources.and_then(|r| r.requests.as_ref())),
                ("limits", resources.and_then(|r| r.limits.as_ref())),
            ];
            let mut limited = false;
            for (part, set) in sets {
                let Some(q) = set.and_then(|m| m.get(name)) else {
                    continue;
                };
                limited |= part == "limits";
                check(
                    &mut out,
                    &format!("spec.dedicated.resources.{part}.{name}"),
                    q,
                    bound,
                );
            }
            if !limited {
                out.push(format!(
                    "spec.dedicated.resources.limits.{name} must be set (at most {})",
                    bound.text
                ));
            }
        }
        if let Some(bound) = &self.max_storage {
            check(
                &mut out,
                "spec.dedicated.storage.size",
                &spec.storage.size,
                bound,
            );
        }
        out
    }
}

fn check(out: &mut Vec<String>, field: &str, q: &Quantity, bound: &Bound) {
    match parse_quantity(&q.0) {
        Ok(v) if v > bound.value => out.push(format!(
            "{field} {} is above the most allowed, {}",
            q.0, bound.text
        )),
        Ok(_) => {}
        Err(e) => out.push(format!("{field}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> DedicatedSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn quantities_read_like_kubernetes_reads_them() {
        assert_eq!(parse_quantity("500m").unwrap(), 0.5);
        assert_eq!(parse_quantity("2").unwrap(), 2.0);
        assert_eq!(parse_quantity("1Gi").unwrap(), 1073741824.0);
        assert_eq!(parse_quantity("1G").unwrap(), 1e9);
        assert_eq!(parse_quantity("1.5Mi").unwrap(), 1.5 * 1048576.0);
        assert_eq!(parse_quantity("1e3").unwrap(), 1000.0);
        for bad in ["", "Gi", "1Zi", "-1", "1 Gi", "abc"] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn no_bounds_allow_anything() {
        let s = spec(json!({"replicas": 7, "image": "anything:1"}));
        assert!(DedicatedBounds::default().violations(&s).is_empty());
    }

    #[test]
    fn each_bound_names_the_field_and_the_limit() {
        let b = DedicatedBounds {
            images: vec!["rabbitmq:".into(), "corp/rabbitmq:".into()],
            max_replicas: Some(3),
            max_cpu: Some(Bound::parse("2").unwrap()),
            max_memory: Some(Bound::parse("4Gi").unwrap()),
            max_storage: Some(Bound::parse("20Gi").unwrap()),
        };
        let within = spec(json!({
            "replicas": 3, "image": "corp/rabbitmq:4.0-management",
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                          "limits": {"cpu": "2", "memory": "4Gi"}},
            "storage": {"size": "20Gi"}
        }));
        assert_eq!(b.violations(&within), Vec::<String>::new());
        let outside = spec(json!({
            "replicas": 5, "image": "evil/miner:1",
            "resources": {"requests": {"cpu": "3"}, "limits": {"memory": "8Gi"}},
            "storage": {"size": "1Ti"}
        }));
        let v = b.violations(&outside);
        assert_eq!(v.len(), 6, "{v:#?}");
        assert!(v[0].contains(
            "\"evil/miner:1\" does not start with an allowed prefix (rabbitmq:, corp/rabbitmq:)"
        ));
        assert!(v[1].contains("replicas 5 is above the most allowed, 3"));
        assert!(v[2].contains("requests.cpu 3 is above the most allowed, 2"));
        assert!(v[3].contains("limits.cpu must be set (at most 2)"));
        assert!(v[4].contains("limits.memory 8Gi is above the most allowed, 4Gi"));
        assert!(v[5].contains("storage.size 1Ti is above the most allowed, 20Gi"));
    }
}
