//! What the controller knows of the cluster without asking: compact indexes of the children it created and of which Applications use which Blueprint.
//!
//! Children are watched metadata-only (Deployments in full, for their status), filtered to
//! `app.kubernetes.io/managed-by=plinth`, and kept here as a few strings and a fingerprint each:
//! 10,000 Applications' worth of objects fit in a few megabytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use plinth_api::{Application, labels};

use super::desired::{ChildKey, sha256};
use super::kinds::Kind;

/// The field manager Plinth applies with.
pub const FIELD_MANAGER: &str = "plinth";

/// What the controller keeps of one child object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildMeta {
    /// The object's uid.
    pub uid: String,
    /// uid of the Application named as controller in its owner references, if any.
    pub controller_uid: Option<String>,
    /// uids of every owner.
    pub owner_uids: Vec<String>,
    /// The `plinth.dev/application` label.
    pub app_label: Option<String>,
    /// Whether `app.kubernetes.io/managed-by` is `plinth`.
    pub managed: bool,
    /// Fingerprint of the fields Plinth owns (its server-side apply entry), empty when Plinth owns none.
    pub fields: String,
    /// Rollout state, for Deployments (boxed: the other kinds, three in four objects, need no room for it).
    pub rollout: Option<Box<Rollout>>,
}

/// A Deployment's rollout state, from its status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rollout {
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.observedGeneration`.
    pub observed_generation: i64,
    /// `spec.replicas`.
    pub desired: i32,
    /// `status.replicas`.
    pub current: i32,
    /// `status.updatedReplicas`.
    pub updated: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// The reason of a failed `Progressing` condition (e.g. `ProgressDeadlineExceeded`).
    pub failure: Option<String>,
}

impl ChildMeta {
    /// Reads what the controller needs from an object's metadata.
    pub fn from_meta(meta: &ObjectMeta) -> ChildMeta {
        let owners = meta.owner_references.as_deref().unwrap_or_default();
        let ours = |o: &&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference| {
            o.kind == "Application" && o.api_version.starts_with(&format!("{}/", plinth_api::GROUP))
        };
        let labels = meta.labels.as_ref();
        ChildMeta {
            uid: meta.uid.clone().unwrap_or_default(),
            controller_uid: owners
                .iter()
                .filter(ours)
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            owner_uids: owners.iter().filter(ours).map(|o| o.uid.clone()).collect(),
            app_label: labels.and_then(|l| l.get(labels::APPLICATION)).cloned(),
            managed: labels
                .and_then(|l| l.get(labels::MANAGED_BY))
                .is_some_and(|v| v == labels::MANAGED_BY_VALUE),
            fields: fields_fingerprint(meta),
            rollout: None,
        }
    }

    /// Reads a Deployment: metadata and rollout state.
    pub fn from_deployment(d: &Deployment) -> ChildMeta {
        let mut meta = ChildMeta::from_meta(&d.metadata);
        let status = d.status.clone().unwrap_or_default();
        meta.rollout = Some(Box::new(Rollout {
            generation: d.metadata.generation.unwrap_or_default(),
            observed_generation: status.observed_generation.unwrap_or_default(),
            desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            current: status.replicas.unwrap_or_default(),
            updated: status.updated_replicas.unwrap_or_default(),
            available: status.available_replicas.unwrap_or_default(),
            failure: status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Progressing" && c.status == "False")
                .and_then(|c| c.reason),
        }));
        meta
    }

    /// Whether the Application with `uid` owns this object (owner reference and Plinth's labels).
    pub fn owned_by(&self, uid: &str) -> bool {
        self.managed && self.owner_uids.iter().any(|o| o == uid)
    }
}

/// `sha256:` of Plinth's server-side apply entry (its apiVersion and field set), or `""` when there is none.
///
/// A hand edit of a field Plinth set moves that field to the editor's entry, so this changes;
/// other controllers writing status or fields Plinth does not set leave it alone.
pub fn fields_fingerprint(meta: &ObjectMeta) -> String {
    meta.managed_fields
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.manager.as_deref() == Some(FIELD_MANAGER) && e.operation.as_deref() == Some("Apply"))
        .map(|e| {
            let fields = e
                .fields_v1
                .as_ref()
                .map(|f| serde_json::to_string(&f.0).unwrap_or_default())
                .unwrap_or_default();
            sha256(format!("{}\n{fields}", e.api_version.as_deref().unwrap_or_default()).as_bytes())
        })
        .unwrap_or_default()
}

type Slot = (String, String);

#[derive(Debug, Default)]
struct KindIndex {
    objects: HashMap<Slot, ChildMeta>,
    /// An Application owns one object of a kind, rarely a few: a list is a fraction of a set's size.
    by_owner: HashMap<String, Vec<Slot>>,
    /// Objects listed since the last `Init`, swapped in at `InitDone`.
    relist: Option<HashMap<Slot, ChildMeta>>,
}

impl KindIndex {
    fn insert(&mut self, slot: Slot, meta: ChildMeta) {
        self.remove(&slot);
        for owner in &meta.owner_uids {
            let slots = self.by_owner.entry(owner.clone()).or_default();
            if !slots.contains(&slot) {
                slots.push(slot.clone());
            }
        }
        self.objects.insert(slot, meta);
    }

    fn remove(&mut self, slot: &Slot) {
        if let Some(old) = self.objects.remove(slot) {
            for owner in &old.owner_uids {
                if let Some(set) = self.by_owner.get_mut(owner) {
                    set.retain(|s| s != slot);
                    if set.is_empty() {
                        self.by_owner.remove(owner);
                    }
                }
            }
        }
    }
}

/// A watch event about a child, reduced to what the index needs.
#[derive(Debug, Clone, PartialEq)]
pub enum ChildEvent {
    /// Added or changed.
    Applied {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What the controller keeps.
        meta: ChildMeta,
    },
    /// Deleted.
    Deleted {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A re-list starts.
    Init,
    /// An object of a re-list.
    InitApplied {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What the controller keeps.
        meta: ChildMeta,
    },
    /// A re-list is complete.
    InitDone,
}

/// The children of every Application, by kind, namespace and name, and by owner.
#[derive(Debug, Default)]
pub struct Children {
    kinds: Mutex<BTreeMap<Kind, KindIndex>>,
}

impl Children {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Kind, KindIndex>> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.kinds.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies a watch event; returns the Applications to reconcile because of it.
    pub fn observe(&self, kind: Kind, event: ChildEvent) -> Vec<(String, String)> {
        let mut kinds = self.lock();
        let index = kinds.entry(kind).or_default();
        let owners = |ns: &str, meta: &ChildMeta| -> Vec<(String, String)> {
            meta.app_label
                .iter()
                .filter(|_| meta.controller_uid.is_some())
                .map(|app| (ns.to_owned(), app.clone()))
                .collect()
        };
        match event {
            ChildEvent::Applied { namespace, name, meta } => {
                let out = owners(&namespace, &meta);
                index.insert((namespace, name), meta);
                out
            }
            ChildEvent::Deleted { namespace, name } => {
                let slot = (namespace, name);
                let out = index.objects.get(&slot).map(|m| owners(&slot.0, m)).unwrap_or_default();
                index.remove(&slot);
                out
            }
            ChildEvent::Init => {
                index.relist = Some(HashMap::new());
                Vec::new()
            }
            ChildEvent::InitApplied { namespace, name, meta } => {
                if let Some(relist) = index.relist.as_mut() {
                    relist.insert((namespace, name), meta);
                }
                Vec::new()
            }
            ChildEvent::InitDone => {
                let listed = index.relist.take().unwrap_or_default();
                let mut touched: HashSet<(String, String)> = HashSet::new();
                let gone: Vec<Slot> = index
                    .objects
                    .keys()
                    .filter(|s| !listed.contains_key(*s))
                    .cloned()
                    .collect();
                for slot in gone {
                    if let Some(m) = index.objects.get(&slot) {
                        touched.extend(owners(&slot.0, m));
                    }
                    index.remove(&slot);
                }
                for (slot, meta) in listed {
                    if index.objects.get(&slot) != Some(&meta) {
                        touched.extend(owners(&slot.0, &meta));
                        index.insert(slot, meta);
                    }
                }
                touched.into_iter().collect()
            }
        }
    }

    /// The object of `kind` named `name` in `namespace`, if Plinth manages one.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<ChildMeta> {
        self.lock()
            .get(&kind)?
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every object that names the Application with `uid` as an owner.
    pub fn owned_by(&self, uid: &str) -> BTreeMap<ChildKey, ChildMeta> {
        let kinds = self.lock();
        let mut out = BTreeMap::new();
        for (kind, index) in kinds.iter() {
            for slot in index.by_owner.get(uid).into_iter().flatten() {
                if let Some(meta) = index.objects.get(slot) {
                    out.insert(
                        ChildKey {
                            kind: *kind,
                            name: slot.1.clone(),
                        },
                        meta.clone(),
                    );
                }
            }
        }
        out
    }

    /// How many objects are indexed.
    pub fn len(&self) -> usize {
        self.lock().values().map(|i| i.objects.len()).sum()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which Applications use which Blueprint, so a Blueprint change re-renders exactly those.
#[derive(Debug, Default)]
pub struct BlueprintUsers {
    inner: Mutex<Users>,
}

#[derive(Debug, Default)]
struct Users {
    by_blueprint: HashMap<String, HashSet<ObjectRef<Application>>>,
    by_app: HashMap<ObjectRef<Application>, String>,
}

impl BlueprintUsers {
    fn lock(&self) -> MutexGuard<'_, Users> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `app` uses `blueprint`.
    pub fn set(&self, app: ObjectRef<Application>, blueprint: &str) {
        let mut users = self.lock();
        if let Some(old) = users.by_app.insert(app.clone(), blueprint.to_owned())
            && old != blueprint
            && let Some(set) = users.by_blueprint.get_mut(&old)
        {
            set.remove(&app);
        }
        users.by_blueprint.entry(blueprint.to_owned()).or_default().insert(app);
    }

    /// Forgets a deleted Application.
    pub fn remove(&self, app: &ObjectRef<Application>) {
        let mut users = self.lock();
        if let Some(old) = users.by_app.remove(app)
            && let Some(set) = users.by_blueprint.get_mut(&old)
        {
            set.remove(app);
        }
    }

    /// The Applications that use `blueprint`.
    pub fn users(&self, blueprint: &str) -> Vec<ObjectRef<Application>> {
        self.lock()
            .by_blueprint
            .get(blueprint)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, OwnerReference};

    pub(crate) fn meta(name: &str, owner: Option<&str>, fields: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(
                [
                    (labels::MANAGED_BY.to_owned(), "plinth".to_owned()),
                    (labels::APPLICATION.to_owned(), "shop".to_owned()),
                ]
                .into(),
            ),
            owner_references: owner.map(|uid| {
                vec![OwnerReference {
                    api_version: "plinth.dev/v1alpha1".into(),
                    kind: "Application".into(),
                    name: "shop".into(),
                    uid: uid.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            managed_fields: Some(vec![
                ManagedFieldsEntry {
                    manager: Some("plinth".into()),
                    operation: Some("Apply".into()),
                    api_version: Some("v1".into()),
                    fields_v1: Some(FieldsV1(serde_json::json!({"f:data": {"f": fields}}))),
                    ..ManagedFieldsEntry::default()
                },
                ManagedFieldsEntry {
                    manager: Some("kube-controller-manager".into()),
                    operation: Some("Update".into()),
                    fields_v1: Some(FieldsV1(serde_json::json!({"f:status": {}}))),
                    ..ManagedFieldsEntry::default()
                },
            ]),
            ..ObjectMeta::default()
        }
    }

    fn applied(name: &str, owner: Option<&str>) -> ChildEvent {
        ChildEvent::Applied {
            namespace: "team".into(),
            name: name.into(),
            meta: ChildMeta::from_meta(&meta(name, owner, "a")),
        }
    }

    #[test]
    fn fingerprint_follows_plinths_fields_only() {
        let a = fields_fingerprint(&meta("x", None, "a"));
        assert!(a.starts_with("sha256:"));
        assert_eq!(a, fields_fingerprint(&meta("y", Some("u"), "a")));
        assert_ne!(a, fields_fingerprint(&meta("x", None, "b")));
        let mut other = meta("x", None, "a");
        if let Some(fields) = other.managed_fields.as_mut() {
            fields[1].fields_v1 = Some(FieldsV1(serde_json::json!({"f:status": {"f:replicas": {}}})));
        }
        assert_eq!(a, fields_fingerprint(&other), "another manager's fields do not count");
        let mut none = meta("x", None, "a");
        none.managed_fields = None;
        assert_eq!(fields_fingerprint(&none), "");
    }

    #[test]
    fn events_map_to_owning_applications_and_relists_replace() {
        let children = Children::default();
        assert_eq!(
            children.observe(Kind::ConfigMap, applied("a", Some("u1"))),
            [("team".to_owned(), "shop".to_owned())]
        );
        assert!(
            children.observe(Kind::ConfigMap, applied("b", None)).is_empty(),
            "unowned: no owner to wake"
        );
        assert_eq!(children.owned_by("u1").len(), 1);
        assert!(children.get(Kind::ConfigMap, "team", "b").is_some());
        assert!(children.get(Kind::Service, "team", "a").is_none());
        children.observe(Kind::ConfigMap, ChildEvent::Init);
        children.observe(
            Kind::ConfigMap,
            ChildEvent::InitApplied {
                namespace: "team".into(),
                name: "b".into(),
                meta: ChildMeta::from_meta(&meta("b", None, "a")),
            },
        );
        assert_eq!(children.len(), 2, "a re-list in progress changes nothing yet");
        let woken = children.observe(Kind::ConfigMap, ChildEvent::InitDone);
        assert_eq!(
            woken,
            [("team".to_owned(), "shop".to_owned())],
            "the owner of the vanished object"
        );
        assert_eq!(children.len(), 1);
        assert!(children.owned_by("u1").is_empty());
        children.observe(
            Kind::ConfigMap,
            ChildEvent::Deleted {
                namespace: "team".into(),
                name: "b".into(),
            },
        );
        assert!(children.is_empty());
    }

    #[test]
    fn blueprint_users_follow_application_changes() {
        let users = BlueprintUsers::default();
        let a = ObjectRef::<Application>::new("a").within("ns");
        let b = ObjectRef::<Application>::new("b").within("ns");
        users.set(a.clone(), "web");
        users.set(b.clone(), "web");
        users.set(b.clone(), "worker");
        assert_eq!(users.users("web"), vec![a.clone()]);
        assert_eq!(users.users("worker"), vec![b.clone()]);
        users.remove(&a);
        assert!(users.users("web").is_empty());
    }
}
