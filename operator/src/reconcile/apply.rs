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

/// A `sha256:<hex>` digest kept as its 32 bytes (no allocation); any other text (the empty fingerprint of an
/// object Plinth owns no field of) as itself. Compares equal to its text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digest {
    /// `sha256:` and 64 lower-case hex digits.
    Sha256([u8; 32]),
    /// Anything else.
    Text(Box<str>),
}

impl Digest {
    fn parse_sha256(s: &str) -> Option<[u8; 32]> {
        let hex = s.strip_prefix("sha256:")?.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *o = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(out)
    }
}

impl From<&str> for Digest {
    fn from(s: &str) -> Digest {
        Digest::parse_sha256(s).map_or_else(|| Digest::Text(s.into()), Digest::Sha256)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Digest::Sha256(bytes) => {
                f.write_str("sha256:")?;
                bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Digest::Text(t) => f.write_str(t),
        }
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        match self {
            Digest::Sha256(bytes) => Digest::parse_sha256(other).is_some_and(|o| o == *bytes),
            Digest::Text(t) => &**t == other,
        }
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        *self == *other.as_str()
    }
}

/// What was applied for one object: the desired hash and Plinth's fields fingerprint afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `DesiredObject::hash` at the last apply.
    pub hash: Digest,
    /// `fields_fingerprint` right after it.
    pub fields: Digest,
}

impl Recorded {
    /// A record of `hash` and `fields` in their text form.
    pub fn new(hash: &str, fields: &str) -> Recorded {
        Recorded {
            hash: Digest::from(hash),
            fields: Digest::from(fields),
        }
    }
}

/// The records of an Application's objects, sorted by key: a list, a fraction of a map's size for the handful of
/// objects one Application has (this is kept for every Application).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Records(Vec<(ChildKey, Recorded)>);

impl Records {
    fn find(&self, key: &ChildKey) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }

    /// The record of `key`.
    pub fn get(&self, key: &ChildKey) -> Option<&Recorded> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    /// The record of `key`, to change.
    pub fn get_mut(&mut self, key: &ChildKey) -> Option<&mut Recorded> {
        self.find(key).ok().map(|i| &mut self.0[i].1)
    }

    /// Records `key`, replacing what was there.
    pub fn insert(&mut self, key: ChildKey, record: Recorded) {
        match self.find(&key) {
            Ok(i) => self.0[i].1 = record,
            Err(i) => self.0.insert(i, (key, record)),
        }
    }

    /// Keeps the records `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&ChildKey, &Recorded) -> bool) {
        self.0.retain(|(k, r)| keep(k, r));
        self.0.shrink_to_fit();
    }

    /// The records in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ChildKey, &Recorded)> {
        self.0.iter().map(|(k, r)| (k, r))
    }
}

impl FromIterator<(ChildKey, Recorded)> for Records {
    fn from_iter<I: IntoIterator<Item = (ChildKey, Recorded)>>(iter: I) -> Records {
        let mut records = Records::default();
        for (k, r) in iter {
            records.insert(k, r);
        }
        records.0.shrink_to_fit();
        records
    }
}

/// What the controller last applied for one Application.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppliedState {
    /// `Desired::hash`.
    pub hash: String,
    /// Per object.
    pub objects: Records,
}

impl AppliedState {
    /// `sha256:` over every object's fields fingerprint: what `status.ownedFieldsHash` stores.
    pub fn fields_hash(&self) -> String {
        fields_hash(self.objects.iter().map(|(k, r)| (k, &r.fields)))
    }
}

/// Combines per-object fingerprints into one.
pub fn fields_hash<'a, F: std::fmt::Display>(objects: impl Iterator<Item = (&'a ChildKey, F)>) -> String {
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
                let fields = live.get(&o.key).map(|m| m.fields.as_str()).unwrap_or_default();
                (o.key.clone(), Recorded::new(&o.hash, fields))
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
                .map(|o| (o.key.clone(), Recorded::new(&o.hash, fields)))
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
            r.hash = Digest::from("sha256:old");
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
    fn digests_are_kept_as_bytes_and_compare_with_their_text() {
        let text = crate::reconcile::desired::sha256(b"x");
        let d = Digest::from(text.as_str());
        assert!(matches!(d, Digest::Sha256(_)));
        assert_eq!(d.to_string(), text);
        assert!(d == text);
        assert!(d != *"sha256:other");
        assert_eq!(Digest::from(""), Digest::Text("".into()));
        assert!(
            matches!(Digest::from("sha256:ABC"), Digest::Text(_)),
            "not a digest: kept as text"
        );
        let mut records: Records = [("b", 1), ("a", 2)]
            .iter()
            .map(|(n, _)| {
                (
                    ChildKey {
                        kind: crate::reconcile::kinds::Kind::ConfigMap,
                        name: (*n).into(),
                    },
                    Recorded::new(&text, ""),
                )
            })
            .collect();
        let names: Vec<&str> = records.iter().map(|(k, _)| k.name.as_str()).collect();
        assert_eq!(names, ["a", "b"], "in key order, as the fields hash needs");
        records.retain(|k, _| k.name == "b");
        assert_eq!(records.iter().count(), 1);
    }

    #[test]
    fn confirmation_reads_decide_create_drift_collision() {
        let d = desired_for(r#"{"image":"ghcr.io/acme/shop:1.0","port":8080}"#);
        let o = &d.objects[0];
        let r = Recorded::new(&o.hash, "f1");
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
