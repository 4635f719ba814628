//! Prune: delete what a previous render produced and this one does not, in reverse apply order, owned objects only.
//!
//! An object is pruned only when it carries `app.kubernetes.io/managed-by: plinth`, the
//! `plinth.dev/application` label of this Application and an owner reference to its uid. A kind
//! the controller does not watch is not in the index, so it is never pruned.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{Api, DeleteParams, DynamicObject, Preconditions};

use super::apply::ObjectError;
use super::desired::{ChildKey, Desired};
use super::index::ChildMeta;
use super::kinds::Served;

/// The objects to delete, in reverse apply order (the workload before what protects it).
pub fn select(
    desired: &Desired,
    live: &BTreeMap<ChildKey, ChildMeta>,
    app_name: &str,
    uid: &str,
) -> Vec<(ChildKey, ChildMeta)> {
    let wanted: BTreeSet<&ChildKey> = desired.objects.iter().map(|o| &o.key).collect();
    let mut out: Vec<(ChildKey, ChildMeta)> = live
        .iter()
        .filter(|(k, m)| !wanted.contains(k) && m.owned_by(uid) && m.app_label.as_deref() == Some(app_name))
        .map(|(k, m)| (k.clone(), m.clone()))
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0));
    out
}

/// Deletes one object, only if it is still the same object (uid precondition). Gone already is fine.
///
/// # Errors
/// When the API call fails.
pub async fn delete(
    client: &kube::Client,
    served: &Served,
    namespace: &str,
    key: &ChildKey,
    meta: &ChildMeta,
) -> Result<(), ObjectError> {
    let Some(ar) = served.resource(key.kind) else {
        return Ok(());
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(meta.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&key.name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(source) => Err(ObjectError {
            action: "delete",
            key: key.clone(),
            namespace: namespace.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::desired::tests_support::desired_for;
    use crate::reconcile::kinds::Kind;

    fn child(owner: &str, app: &str, managed: bool) -> ChildMeta {
        ChildMeta {
            uid: format!("obj-{owner}-{app}"),
            controller_uid: Some(owner.into()),
            owner_uids: vec![owner.into()],
            app_label: Some(app.into()),
            managed,
            fields: String::new(),
            rollout: None,
        }
    }

    fn key(kind: Kind, name: &str) -> ChildKey {
        ChildKey {
            kind,
            name: name.into(),
        }
    }

    #[test]
    fn prunes_only_owned_leftovers_in_reverse_order() {
        let d = desired_for(r#"{"image":"ghcr.io/acme/shop:1.0","port":8080}"#);
        let mut live: BTreeMap<ChildKey, ChildMeta> = d
            .objects
            .iter()
            .map(|o| (o.key.clone(), child("u-1", "shop", true)))
            .collect();
        live.insert(key(Kind::PodDisruptionBudget, "shop-old"), child("u-1", "shop", true));
        live.insert(key(Kind::ConfigMap, "shop-config"), child("u-1", "shop", true));
        live.insert(key(Kind::Role, "someone-elses"), child("u-2", "shop", true));
        live.insert(key(Kind::Role, "unlabelled"), child("u-1", "shop", false));
        live.insert(key(Kind::Role, "other-app-label"), child("u-1", "cart", true));
        let pruned: Vec<String> = select(&d, &live, "shop", "u-1")
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(pruned, ["PodDisruptionBudget shop-old", "ConfigMap shop-config"]);
    }

    #[test]
    fn nothing_to_prune_when_everything_is_desired() {
        let d = desired_for(r#"{"image":"ghcr.io/acme/shop:1.0","port":8080}"#);
        let live: BTreeMap<ChildKey, ChildMeta> = d
            .objects
            .iter()
            .map(|o| (o.key.clone(), child("u-1", "shop", true)))
            .collect();
        assert!(select(&d, &live, "shop", "u-1").is_empty());
    }
}
