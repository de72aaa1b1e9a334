//! Step 3 (continued): the Prometheus-operator objects, built only when the
//! `monitoring.coreos.com` CRDs exist. They are `DynamicObject`s: the operator has no
//! compile-time types for another project's CRDs, and needs none to server-side apply.
//!
//! The rules and the dashboard are the repository's own `dashboards/` files, compiled in,
//! so what the operator installs is exactly what the metrics contract test checks.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::model::{Model, INSTANCE_LABEL};

const ALERTS_YAML: &str = include_str!("../../../dashboards/alerts.yaml");
/// `(file name, JSON)` of every `dashboards/*.json` (listed by build.rs).
const DASHBOARDS: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/dashboards.rs"));

pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

pub fn prometheus_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
        "prometheusrules",
    )
}

/// Our labels plus the user's `spec.metrics.labels` (e.g. the `release` a Prometheus
/// selects on); ours win so the leftover search still finds the object.
fn labels(m: &Model) -> BTreeMap<String, String> {
    let mut l = m.spec.metrics.labels.clone();
    l.extend(m.labels());
    l
}

fn dynamic(
    ar: &ApiResource,
    m: &Model,
    name: &str,
    labels: BTreeMap<String, String>,
    spec: serde_json::Value,
) -> DynamicObject {
    let mut o = DynamicObject::new(name, ar).within(&m.namespace);
    o.metadata.labels = Some(labels);
    o.metadata.owner_references = Some(vec![m.owner.clone()]);
    o.data = json!({ "spec": spec });
    o
}

/// The Prometheus label a pod label becomes in service discovery
/// (`app.kubernetes.io/instance` -> `__meta_kubernetes_pod_label_app_kubernetes_io_instance`).
fn pod_label_meta(label: &str) -> String {
    let name: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("__meta_kubernetes_pod_label_{name}")
}

/// Scrapes every broker's `/metrics` through the headless Service's `http` port. Every
/// series gets the target labels the dashboards and alerts group by: `namespace` and `pod`
/// (the ServiceMonitor's defaults) and `cluster`, the Cluster's name from the pod's
/// instance label. Cardinality is the broker's business (`fjord.metrics.granularity`,
/// set from `spec.metrics.granularity`), so nothing is dropped here.
pub fn service_monitor(m: &Model) -> DynamicObject {
    let endpoint = json!({
        "port": "http",
        "path": "/metrics",
        "interval": "30s",
        "relabelings": [{
            "action": "replace",
            "sourceLabels": [pod_label_meta(INSTANCE_LABEL)],
            "targetLabel": "cluster",
        }],
    });
    let spec = json!({
        "selector": {"matchLabels": m.selector()},
        "namespaceSelector": {"matchNames": [m.namespace]},
        "endpoints": [endpoint],
    });
    dynamic(&service_monitor_resource(), m, &m.name, labels(m), spec)
}

/// `dashboards/alerts.yaml` is already a rule file (`groups: [...]`), which is exactly a
/// PrometheusRule's spec.
pub fn prometheus_rule(m: &Model) -> DynamicObject {
    let spec: serde_json::Value = serde_saphyr::from_str(ALERTS_YAML).expect("dashboards/alerts.yaml is valid YAML");
    dynamic(&prometheus_rule_resource(), m, &m.name, labels(m), spec)
}

/// Grafana's dashboard sidecar loads ConfigMaps labelled `grafana_dashboard: "1"`.
pub fn dashboards_config_map(m: &Model) -> ConfigMap {
    let mut l = labels(m);
    l.insert("grafana_dashboard".into(), "1".into());
    ConfigMap {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(m.dashboards_config_map()),
            namespace: Some(m.namespace.clone()),
            labels: Some(l),
            owner_references: Some(vec![m.owner.clone()]),
            ..Default::default()
        },
        data: Some(DASHBOARDS.iter().map(|(f, body)| (f.to_string(), body.to_string())).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::model::{test_cluster, validate};

    fn model(metrics: serde_json::Value) -> Model {
        validate(&test_cluster(json!({"image": "i", "replicas": 1, "storage": {"size": "1Gi"}, "metrics": metrics})))
            .unwrap()
    }

    #[test]
    fn rule_comes_from_the_alerts_file() {
        let r = prometheus_rule(&model(json!({"labels": {"release": "prom"}})));
        assert_eq!(r.types.as_ref().unwrap().kind, "PrometheusRule");
        let groups = r.data["spec"]["groups"].as_array().unwrap();
        assert_eq!(groups[0]["name"], "fjord-broker");
        assert!(groups[0]["rules"].as_array().unwrap().iter().any(|r| r["alert"] == "FjordOfflinePartitions"));
        assert_eq!(r.metadata.labels.as_ref().unwrap()["release"], "prom");
    }

    #[test]
    fn service_monitor_labels_series_with_the_cluster_and_drops_nothing() {
        for metrics in [json!({}), json!({"granularity": "partition"})] {
            let sm = service_monitor(&model(metrics));
            let spec = &sm.data["spec"];
            assert_eq!(spec["selector"]["matchLabels"]["app.kubernetes.io/instance"], "events");
            assert_eq!(spec["namespaceSelector"], json!({"matchNames": ["prod"]}));
            let ep = &spec["endpoints"][0];
            assert_eq!((ep["port"].as_str(), ep["path"].as_str()), (Some("http"), Some("/metrics")));
            assert_eq!(
                ep["relabelings"],
                json!([{"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
                        "targetLabel": "cluster"}])
            );
            assert!(ep.get("metricRelabelings").is_none(), "granularity is the broker's config now");
        }
        let sm = service_monitor(&model(json!({"labels": {"release": "kube-prometheus-stack"}})));
        let l = sm.metadata.labels.as_ref().unwrap();
        assert_eq!(l["release"], "kube-prometheus-stack");
        assert_eq!(l["app.kubernetes.io/managed-by"], "fjord-operator");
        assert_eq!(sm.metadata.owner_references.as_ref().unwrap()[0].name, "events");
    }

    #[test]
    fn dashboards_are_labelled_for_grafana() {
        let cm = dashboards_config_map(&model(json!({"dashboards": true, "labels": {"release": "prom"}})));
        let l = cm.metadata.labels.unwrap();
        assert_eq!((l["grafana_dashboard"].as_str(), l["release"].as_str()), ("1", "prom"));
        assert_eq!(cm.metadata.name.as_deref(), Some("events-dashboards"));
        let data = cm.data.unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".json"))
            .collect();
        files.sort();
        assert_eq!(data.keys().cloned().collect::<Vec<_>>(), files, "every dashboards/*.json");
        for (f, body) in &data {
            assert_eq!(body, &std::fs::read_to_string(dir.join(f)).unwrap());
            assert!(serde_json::from_str::<serde_json::Value>(body).is_ok(), "{f} is JSON");
        }
    }
}
