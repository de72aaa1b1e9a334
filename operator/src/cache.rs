//! What the controllers keep of the objects they watch.
//!
//! A reflector store holds every watched object for the life of the process, and with
//! 1000 Topics most of each object is bookkeeping the controllers never read: the
//! server-side apply `managedFields` and kubectl's `last-applied-configuration` annotation
//! (a second copy of the spec). Dropping them before they reach a store keeps the
//! operator's memory proportional to what it uses.

use kube::Resource;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Strip what no controller reads from an object about to enter a store.
pub fn slim<K: Resource>(o: &mut K) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[test]
    fn slim_keeps_what_controllers_read() {
        let mut cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "generation": 3, "finalizers": ["fjord.dev/topic"],
                         "annotations": {LAST_APPLIED: "{...}", "fjord.dev/paused": "true"},
                         "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "data": {"k": "v"}
        }))
        .unwrap();
        slim(&mut cm);
        let v = serde_json::to_value(&cm).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "generation": 3, "finalizers": ["fjord.dev/topic"],
                                            "annotations": {"fjord.dev/paused": "true"}},
                               "data": {"k": "v"}})
        );
    }
}
