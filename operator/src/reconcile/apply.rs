//! Apply: decide which desired objects need writing (pure), then server-side apply them in order as field manager `plinth`.
//!
//! An object is written only when its desired content changed, it is missing, or someone
//! changed a field Plinth owns (its fields fingerprint moved). An object Plinth does not own
//! is never written: a name collision is reported instead.

use std::collections::BTreeMap;

use kube::api::{Api, DynamicObject, Patch, PatchParams};

use super::desired::{ChildKey, Desired, DesiredObject};
use super::index::{ChildMeta, FIELD_MANAGER, fields_fingerprint};
use super::kinds::Served;

/// What was applied for one object: the desired hash and Plinth's fields fingerprint afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `DesiredObject::hash` at the last apply.
    pub hash: String,
    /// `fields_fingerprint` right after it.
    pub fields: String,
}

/// What the controller last applied for one Application.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppliedState {
    /// `Desired::hash`.
    pub hash: String,
    /// Per object.
    pub objects: BTreeMap<ChildKey, Recorded>,
}

impl AppliedState {
    /// `sha256:` over every object's fields fingerprint: what `status.ownedFieldsHash` stores.
    pub fn fields_hash(&self) -> String {
        fields_hash(self.objects.iter().map(|(k, r)| (k, r.fields.as_str())))
    }
}

/// Combines per-object fingerprints into one.
pub fn fields_hash<'a>(objects: impl Iterator<Item = (&'a ChildKey, &'a str)>) -> String {
    let mut text = String::new();
    for (k, f) in objects {
        text.push_str(&format!("{k}={f}\n"));
    }
    super::desired::sha256(text.as_bytes())
}

/// Why an object is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It does not exist.
    Create,
    /// Its desired content changed.
    Changed,
    /// Someone changed or removed what Plinth set.
    Drifted,
}

/// The decision for one desired object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to write.
    UpToDate,
    /// Write it.
    Apply(Why),
    /// The index cannot tell (absent, or fingerprint moved): read the object to decide.
    Confirm,
    /// An object of that kind and name exists and is not this Application's: leave it alone.
    Collision(String),
}

/// The known state of one Application's children: from memory, or seeded from its status after a restart.
///
/// Returns `None` when nothing can be trusted and every owned object must be applied.
pub fn baseline(
    memory: Option<&AppliedState>,
    status: Option<&plinth_api::ApplicationStatus>,
    desired: &Desired,
    live: &BTreeMap<ChildKey, ChildMeta>,
) -> Option<AppliedState> {
    if let Some(m) = memory {
        return Some(m.clone());
    }
    let status = status?;
    if status.applied_hash.as_deref() != Some(desired.hash.as_str()) {
        return None;
    }
    let seeded = AppliedState {
        hash: desired.hash.clone(),
        objects: desired
            .objects
            .iter()
            .map(|o| {
                let fields = live.get(&o.key).map(|m| m.fields.clone()).unwrap_or_default();
                (
                    o.key.clone(),
                    Recorded {
                        hash: o.hash.clone(),
                        fields,
                    },
                )
            })
            .collect(),
    };
    (status.owned_fields_hash.as_deref() == Some(seeded.fields_hash().as_str())).then_some(seeded)
}

/// Decides, from the index alone, what each desired object needs.
pub fn plan(
    desired: &Desired,
    live: impl Fn(&ChildKey) -> Option<ChildMeta>,
    baseline: Option<&AppliedState>,
    uid: &str,
) -> Vec<Verdict> {
    desired
        .objects
        .iter()
        .map(|o| {
            let recorded = baseline.and_then(|b| b.objects.get(&o.key));
            match live(&o.key) {
                None => Verdict::Confirm,
                Some(m) if !m.owned_by(uid) => Verdict::Collision(owner_of(&m)),
                Some(m) => match recorded {
                    Some(r) if r.hash == o.hash && r.fields == m.fields => Verdict::UpToDate,
                    Some(r) if r.hash == o.hash => Verdict::Confirm,
                    _ => Verdict::Apply(Why::Changed),
                },
            }
        })
        .collect()
}

/// Decides for an object read from the API server (`None`: it does not exist).
pub fn confirm(found: Option<&ChildMeta>, recorded: Option<&Recorded>, object: &DesiredObject, uid: &str) -> Verdict {
    match found {
        None => Verdict::Apply(Why::Create),
        Some(m) if m.controller_uid.as_deref() != Some(uid) => Verdict::Collision(owner_of(m)),
        Some(m) => match recorded {
            Some(r) if r.hash == object.hash && r.fields == m.fields => Verdict::UpToDate,
            Some(r) if r.hash == object.hash => Verdict::Apply(Why::Drifted),
            _ => Verdict::Apply(Why::Changed),
        },
    }
}

fn owner_of(m: &ChildMeta) -> String {
    match (&m.controller_uid, &m.app_label) {
        (Some(_), Some(app)) if m.managed => format!("it belongs to Application {app:?}"),
        (Some(uid), _) => format!("it is controlled by another owner (uid {uid})"),
        (None, _) => "it was not created by Plinth".to_owned(),
    }
}

/// An API call on one object failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {key} in namespace {namespace}")]
pub struct ObjectError {
    /// What was being done: `apply`, `read`, `delete`.
    pub action: &'static str,
    /// The object.
    pub key: ChildKey,
    /// Its namespace.
    pub namespace: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

fn api(client: &kube::Client, served: &Served, key: &ChildKey, namespace: &str) -> Option<Api<DynamicObject>> {
    served
        .resource(key.kind)
        .map(|ar| Api::namespaced_with(client.clone(), namespace, &ar))
}

/// Reads one object; `Ok(None)` when it does not exist.
///
/// # Errors
/// When the API call fails.
pub async fn read(
    client: &kube::Client,
    served: &Served,
    key: &ChildKey,
    namespace: &str,
) -> Result<Option<ChildMeta>, ObjectError> {
    let Some(api) = api(client, served, key, namespace) else {
        return Ok(None);
    };
    api.get_metadata_opt(&key.name)
        .await
        .map(|o| o.map(|o| ChildMeta::from_meta(&o.metadata)))
        .map_err(|source| ObjectError {
            action: "read",
            key: key.clone(),
            namespace: namespace.to_owned(),
            source,
        })
}

/// Server-side applies one object with field manager `plinth`, taking back fields a hand edit took.
///
/// Returns Plinth's fields fingerprint after the apply.
///
/// # Errors
/// When the API call fails.
pub async fn object(
    client: &kube::Client,
    served: &Served,
    namespace: &str,
    object: &DesiredObject,
) -> Result<String, ObjectError> {
    let err = |source| ObjectError {
        action: "apply",
        key: object.key.clone(),
        namespace: namespace.to_owned(),
        source,
    };
    let Some(api) = api(client, served, &object.key, namespace) else {
        return Err(err(kube::Error::Discovery(
            kube::error::DiscoveryError::MissingResource(object.key.kind.name().to_owned()),
        )));
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = api
        .patch(&object.key.name, &params, &Patch::Apply(&object.json))
        .await
        .map_err(err)?;
    Ok(fields_fingerprint(&applied.metadata))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::desired::tests_support::desired_for;
    use crate::reconcile::index::ChildMeta;

    fn owned(uid: &str, fields: &str) -> ChildMeta {
        ChildMeta {
            uid: "x".into(),
            controller_uid: Some(uid.into()),
            owner_uids: vec![uid.into()],
            app_label: Some("shop".into()),
            managed: true,
            fields: fields.into(),
            rollout: None,
        }
    }

    fn recorded_all(d: &Desired, fields: &str) -> AppliedState {
        AppliedState {
            hash: d.hash.clone(),
            objects: d
                .objects
                .iter()
                .map(|o| {
                    (
                        o.key.clone(),
                        Recorded {
                            hash: o.hash.clone(),
                            fields: fields.into(),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn an_unchanged_application_needs_no_write() {
        let d = desired_for(r#"{"image":"ghcr.io/acme/shop:1.0","port":8080}"#);
        let base = recorded_all(&d, "f1");
        let verdicts = plan(&d, |_| Some(owned("u-1", "f1")), Some(&base), "u-1");
        assert!(verdicts.iter().all(|v| *v == Verdict::UpToDate), "{verdicts:?}");
    }

    #[test]
    fn changes_drift_absence_and_collisions_are_told_apart() {
        let d = desired_for(r#"{"image":"ghcr.io/acme/shop:1.0","port":8080}"#);
        let mut base = recorded_all(&d, "f1");
        let first = d.objects[0].key.clone();
        let last = d.objects[d.objects.len() - 1].key.clone();
        if let Some(r) = base.objects.get_mut(&last) {
            r.hash = "sha256:old".into();
        }
        let verdicts = plan(
            &d,
            |k| {
                if *k == first {
                    Some(owned("u-1", "f2"))
                } else if k.kind == super::super::kinds::Kind::Service {
                    None
                } else if k.kind == super::super::kinds::Kind::ConfigMap {
                    Some(owned("other-app", "f1"))
                } else {
                    Some(owned("u-1", "f1"))
                }
            },
            Some(&base),
            "u-1",
        );
        assert_eq!(verdicts[0], Verdict::Confirm, "fingerprint moved: read before writing");
        assert_eq!(verdicts[verdicts.len() - 1], Verdict::Apply(Why::Changed));
        for (o, v) in d.objects.iter().zip(&verdicts) {
            match o.key.kind {
                super::super::kinds::Kind::Service => assert_eq!(*v, Verdict::Confirm),
                super::super::kinds::Kind::ConfigMap => assert!(matches!(v, Verdict::Collision(_))),
                _ => {}
            }
        }
        assert!(
            plan(&d, |_| Some(owned("u-1", "f1")), None, "u-1")
                .iter()
                .all(|v| *v == Verdict::Apply(Why::Changed)),
            "without a baseline every owned object is applied"
        );
    }

    #[test]
    fn confirmation_reads_decide_create_drift_collision() {
        let d = desired_for(r#"{"image":"ghcr.io/acme/shop:1.0","port":8080}"#);
        let o = &d.objects[0];
        let r = Recorded {
            hash: o.hash.clone(),
            fields: "f1".into(),
        };
        assert_eq!(confirm(None, Some(&r), o, "u-1"), Verdict::Apply(Why::Create));
        assert_eq!(
            confirm(Some(&owned("u-1", "f1")), Some(&r), o, "u-1"),
            Verdict::UpToDate
        );
        assert_eq!(
            confirm(Some(&owned("u-1", "f2")), Some(&r), o, "u-1"),
            Verdict::Apply(Why::Drifted)
        );
        let mut foreign = owned("u-1", "f1");
        foreign.controller_uid = None;
        foreign.managed = false;
        assert_eq!(
            confirm(Some(&foreign), Some(&r), o, "u-1"),
            Verdict::Collision("it was not created by Plinth".into())
        );
    }

    #[test]
    fn baseline_is_seeded_from_status_only_when_both_hashes_match() {
        let d = desired_for(r#"{"image":"ghcr.io/acme/shop:1.0","port":8080}"#);
        let live: BTreeMap<ChildKey, ChildMeta> =
            d.objects.iter().map(|o| (o.key.clone(), owned("u-1", "f1"))).collect();
        let state = recorded_all(&d, "f1");
        let status = plinth_api::ApplicationStatus {
            applied_hash: Some(d.hash.clone()),
            owned_fields_hash: Some(state.fields_hash()),
            ..Default::default()
        };
        assert_eq!(baseline(None, Some(&status), &d, &live), Some(state.clone()));
        let edited: BTreeMap<ChildKey, ChildMeta> =
            d.objects.iter().map(|o| (o.key.clone(), owned("u-1", "f2"))).collect();
        assert_eq!(
            baseline(None, Some(&status), &d, &edited),
            None,
            "edited while the operator was away"
        );
        let stale = plinth_api::ApplicationStatus {
            applied_hash: Some("sha256:other".into()),
            ..status
        };
        assert_eq!(baseline(None, Some(&stale), &d, &live), None);
        assert_eq!(
            baseline(Some(&state), None, &d, &live),
            Some(state.clone()),
            "memory wins"
        );
    }
}
