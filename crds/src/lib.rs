//! Custom resources of the Fjord operator, API group `fjord.dev`, version `v1alpha1`.
//!
//! The Rust types are the source of truth: `crdgen` renders them to `crds/*.yaml` and the
//! Helm chart's `crds/`, and a test fails when the committed YAML drifts. Validation the
//! API server can enforce lives in the schema as CEL rules (`x-kubernetes-validations`),
//! so a bad edit is refused by `kubectl apply` instead of surfacing later as a failed
//! reconcile; the tests run the same rules with a CEL interpreter.
//!
//! Doc comments on fields become the schema descriptions `kubectl explain` shows.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub mod cluster;
pub mod topic;

pub use cluster::{Cluster, ClusterSpec, ClusterStatus};
pub use topic::{Topic, TopicSpec, TopicStatus};

/// The API group of every Fjord resource.
pub const GROUP: &str = "fjord.dev";

/// Condition types the controllers set on both kinds, as Kubernetes' `Condition.type`.
pub mod condition {
    /// The resource does what its spec asks (brokers serving / topic matches the spec).
    pub const READY: &str = "Ready";
    /// The controller is changing something: a roll, a scale, a partition increase.
    pub const PROGRESSING: &str = "Progressing";
    /// Serving, but with less redundancy than asked: under-replicated or offline
    /// partitions, a broker down.
    pub const DEGRADED: &str = "Degraded";
}

/// Ports the operator gives every broker pod; a listener may not take them.
pub mod ports {
    /// The KRaft controller listener (`controller.listener.names`): Raft and heartbeats.
    pub const CONTROLLER: i32 = 9093;
    /// `fjord.http.listen`: `/metrics`, `/health`, `/ready` (probes need it even with
    /// metrics off).
    pub const HTTP: i32 = 9644;
}

/// A CRD and the file `crdgen` writes it to.
pub struct CrdFile {
    pub file: &'static str,
    pub crd: CustomResourceDefinition,
}

/// Every CRD this crate defines, as `crdgen` writes them: install these (not
/// `Cluster::crd()`) so the applied CRDs equal the committed YAML.
pub fn crds() -> Vec<CrdFile> {
    [("cluster.yaml", Cluster::crd()), ("topic.yaml", Topic::crd())]
        .into_iter()
        .map(|(file, crd)| {
            let mut json = serde_json::to_value(crd).expect("a CRD serializes");
            unwrap_descriptions(&mut json);
            CrdFile { file, crd: serde_json::from_value(json).expect("a CRD round-trips") }
        })
        .collect()
}

/// Doc comments are hard-wrapped for the source; `kubectl explain` wraps text itself, so
/// each paragraph goes out as one line. Blank lines and list items keep their breaks.
fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(text) if key == "description" => {
                        let lines: Vec<&str> = text.split('\n').collect();
                        let mut out = String::new();
                        for (i, line) in lines.iter().enumerate() {
                            if i > 0 {
                                let joins = !lines[i - 1].is_empty()
                                    && !line.is_empty()
                                    && !line.starts_with(['-', '*', ' ', '\t']);
                                out.push(if joins { ' ' } else { '\n' });
                            }
                            out.push_str(line);
                        }
                        *text = out;
                    }
                    _ => unwrap_descriptions(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// The YAML `crdgen` writes for a CRD, header included.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    let body = serde_saphyr::to_string(crd).expect("a CRD serializes to YAML");
    format!("# Generated from crds/src by `cargo run -p fjord-crds --bin crdgen`: do not edit.\n{body}")
}
