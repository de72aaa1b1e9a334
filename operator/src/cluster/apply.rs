//! Steps 4 and 5: server-side apply of the children in a fixed order, and deletion of
//! leftovers.
//!
//! Each child carries a hash of its desired form in the `fjord.dev/spec-hash` annotation;
//! when the live object already has the same hash nothing is sent, so a reconcile of an
//! unchanged Cluster makes no API write (reads only). All children go through one
//! `DynamicObject` path, which also serves the monitoring kinds the operator has no
//! compile-time types for.

use std::collections::BTreeSet;

use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;

use super::model::{short_hash, Model, INSTANCE_LABEL, MANAGER};
use crate::metrics::Metrics;

pub const SPEC_HASH_ANNOTATION: &str = "fjord.dev/spec-hash";

/// One object to apply, with its API resource.
#[derive(Debug, Clone)]
pub struct Child {
    pub ar: ApiResource,
    pub obj: DynamicObject,
}

impl Child {
    /// Erase a typed object and stamp its spec hash.
    pub fn typed<K: Resource<DynamicType = ()> + Serialize>(obj: &K) -> Child {
        let ar = ApiResource::erase::<K>(&());
        let mut v = serde_json::to_value(obj).expect("k8s objects serialize");
        v["apiVersion"] = ar.api_version.clone().into();
        v["kind"] = ar.kind.clone().into();
        Child::dynamic(ar, serde_json::from_value(v).expect("a typed object is a DynamicObject"))
    }

    pub fn dynamic(ar: ApiResource, mut obj: DynamicObject) -> Child {
        let hash = short_hash(&[serde_json::to_string(&obj).expect("serializes").as_bytes()]);
        obj.annotations_mut().insert(SPEC_HASH_ANNOTATION.into(), hash);
        Child { ar, obj }
    }

    pub fn hash(&self) -> &str {
        &self.obj.annotations()[SPEC_HASH_ANNOTATION]
    }

    pub fn name(&self) -> String {
        self.obj.name_any()
    }

    /// Whether the live object differs from this child: another hash, or a field others
    /// commonly change behind our back (`kubectl scale` on the StatefulSet).
    pub fn differs_from(&self, live: &DynamicObject) -> bool {
        if live.annotations().get(SPEC_HASH_ANNOTATION).map(String::as_str) != Some(self.hash()) {
            return true;
        }
        let want = &self.obj.data["spec"]["replicas"];
        !want.is_null() && &live.data["spec"]["replicas"] != want
    }
}

fn api(client: &Client, ns: &str, ar: &ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, ar)
}

/// Apply `child` unless the live object already matches. Returns whether it wrote.
pub async fn apply(client: &Client, metrics: &Metrics, ns: &str, child: &Child) -> Result<bool, kube::Error> {
    let api = api(client, ns, &child.ar);
    let name = child.name();
    if let Some(live) = api.get_opt(&name).await? {
        if !child.differs_from(&live) {
            return Ok(false);
        }
    }
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&child.obj)).await?;
    metrics.api_write("cluster", &child.ar.kind);
    tracing::info!(kind = %child.ar.kind, %name, "applied");
    Ok(true)
}

/// Delete objects of the kinds in `kinds` that carry this Cluster's labels and owner but
/// are not among `wanted` (e.g. the monitoring objects after metrics were disabled).
/// Returns what it deleted, as `Kind/name`.
pub async fn prune(
    client: &Client,
    metrics: &Metrics,
    m: &Model,
    kinds: &[ApiResource],
    wanted: &[Child],
) -> Result<Vec<String>, kube::Error> {
    let keep: BTreeSet<(String, String)> = wanted.iter().map(|c| (c.ar.kind.clone(), c.name())).collect();
    let selector = format!("{INSTANCE_LABEL}={},app.kubernetes.io/managed-by={MANAGER}", m.name);
    let mut deleted = Vec::new();
    for ar in kinds {
        let api = api(client, &m.namespace, ar);
        for obj in api.list_metadata(&ListParams::default().labels(&selector)).await? {
            let name = obj.name_any();
            let ours = obj.owner_references().iter().any(|o| o.uid == m.owner.uid);
            if ours && !keep.contains(&(ar.kind.clone(), name.clone())) {
                api.delete(&name, &DeleteParams::background()).await?;
                metrics.api_write("cluster", &ar.kind);
                tracing::info!(kind = %ar.kind, %name, "deleted leftover");
                deleted.push(format!("{}/{name}", ar.kind));
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::collections::BTreeMap;

    fn cm(v: &str) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta { name: Some("c".into()), ..Default::default() },
            data: Some(BTreeMap::from([("k".to_string(), v.to_string())])),
            ..Default::default()
        }
    }

    #[test]
    fn same_object_same_hash_and_no_write() {
        let a = Child::typed(&cm("1"));
        assert_eq!(a.ar.kind, "ConfigMap");
        assert_eq!(a.obj.types.as_ref().unwrap().api_version, "v1");
        assert_eq!(a.hash(), Child::typed(&cm("1")).hash());
        assert_ne!(a.hash(), Child::typed(&cm("2")).hash());
        let mut live = a.obj.clone();
        live.metadata.resource_version = Some("42".into());
        assert!(!a.differs_from(&live));
        live.annotations_mut().remove(SPEC_HASH_ANNOTATION);
        assert!(a.differs_from(&live));
    }

    #[test]
    fn a_scaled_statefulset_differs_despite_the_hash() {
        let mut sts = k8s_openapi::api::apps::v1::StatefulSet::default();
        sts.metadata.name = Some("s".into());
        sts.spec = Some(k8s_openapi::api::apps::v1::StatefulSetSpec { replicas: Some(3), ..Default::default() });
        let c = Child::typed(&sts);
        let mut live = c.obj.clone();
        assert!(!c.differs_from(&live));
        live.data["spec"]["replicas"] = 5.into();
        assert!(c.differs_from(&live));
    }
}
