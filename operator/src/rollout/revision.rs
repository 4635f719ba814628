//! Blueprint revisions: immutable, numbered, hashed copies of what renders (templates, defaults, parameters, policy),
//! stored as `apps/v1` ControllerRevisions owned by the Blueprint. Pure: building and reading the objects.
//!
//! Why ControllerRevisions and not a history in the Blueprint's status: they are the Kubernetes-native record of
//! this (DaemonSets and StatefulSets keep theirs the same way), need no new CRD, are immutable in `data`, are
//! deleted with their Blueprint by the garbage collector, and do not grow the Blueprint past etcd's object
//! size. One is kept while any Application runs or pins it, and the newest `KEEP` besides.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use plinth_api::{Blueprint, BlueprintSpec};

use crate::render::blueprint::content_hash;

/// Label on every revision naming its Blueprint.
pub const BLUEPRINT_LABEL: &str = "plinth.dev/blueprint";
/// Annotation on a revision holding its content hash.
pub const HASH_ANNOTATION: &str = "plinth.dev/revision-hash";
/// Revisions kept besides those in use.
pub const KEEP: usize = 10;

/// One revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// Its number, from 1, increasing with each new content.
    pub number: i64,
    /// `sha256:` of `spec`.
    pub hash: String,
    /// What renders: the Blueprint's spec without its rollout strategy.
    pub spec: BlueprintSpec,
}

/// Why a ControllerRevision is not a Plinth revision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevisionError {
    /// It holds no data.
    #[error("ControllerRevision {0} holds no data")]
    NoData(String),
    /// Its data is not a Blueprint spec.
    #[error("ControllerRevision {name} does not hold a Blueprint spec: {message}")]
    NotASpec {
        /// Its name.
        name: String,
        /// The decoding error.
        message: String,
    },
}

/// What renders: the spec without `rollout` (changing how a change rolls out is not a change of what renders).
pub fn content(spec: &BlueprintSpec) -> BlueprintSpec {
    BlueprintSpec {
        rollout: None,
        ..spec.clone()
    }
}

/// The revision hash of a spec: `sha256:` of its content, the same as the render's `blueprint_hash` for that content.
pub fn hash(spec: &BlueprintSpec) -> String {
    content_hash(&content(spec))
}

/// The ControllerRevision name of a Blueprint's revision: `<blueprint>-<first 10 hex digits of the hash>`.
pub fn name(blueprint: &str, hash: &str) -> String {
    let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
    let prefix: String = blueprint.chars().take(242).collect();
    format!("{prefix}-{}", hex.get(..10).unwrap_or(hex))
}

/// What a spec means for the revision history.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// The newest revision already holds this content.
    Current(i64),
    /// An older revision holds this content (an undo, or an edit reverted). The driver makes `old` the Blueprint's
    /// revision again, keeping its number, so Applications still running it keep finding it; `number` is what a
    /// renumbering scheme (like a DaemonSet's) would give it.
    Reuse {
        /// The revision holding the content.
        old: i64,
        /// Its new number.
        number: i64,
    },
    /// New content: a new revision.
    New(Box<Revision>),
}

/// Decides the revision for a Blueprint's spec, given the revisions that exist (any order).
pub fn next(existing: &[Revision], spec: &BlueprintSpec) -> Next {
    let h = hash(spec);
    let newest = existing.iter().map(|r| r.number).max().unwrap_or(0);
    match existing.iter().find(|r| r.hash == h) {
        Some(r) if r.number == newest => Next::Current(r.number),
        Some(r) => Next::Reuse {
            old: r.number,
            number: newest + 1,
        },
        None => Next::New(Box::new(Revision {
            number: newest + 1,
            hash: h,
            spec: content(spec),
        })),
    }
}

/// The ControllerRevision for a revision, in `namespace`, owned by the Blueprint (deleted with it).
pub fn to_object(bp: &Blueprint, rev: &Revision, namespace: &str) -> ControllerRevision {
    let bp_name = bp.metadata.name.clone().unwrap_or_default();
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name(&bp_name, &rev.hash)),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [
                    (BLUEPRINT_LABEL.to_owned(), bp_name.clone()),
                    (
                        plinth_api::labels::MANAGED_BY.to_owned(),
                        plinth_api::labels::MANAGED_BY_VALUE.to_owned(),
                    ),
                ]
                .into(),
            ),
            annotations: Some([(HASH_ANNOTATION.to_owned(), rev.hash.clone())].into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "plinth.dev/v1alpha1".into(),
                kind: "Blueprint".into(),
                name: bp_name,
                uid: bp.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(false),
            }]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(serde_json::to_value(&rev.spec).unwrap_or_default())),
        revision: rev.number,
    }
}

/// Reads a revision back from its ControllerRevision; the hash is recomputed from the data, never trusted.
pub fn from_object(cr: &ControllerRevision) -> Result<Revision, RevisionError> {
    let name = cr.metadata.name.clone().unwrap_or_default();
    let data = cr.data.as_ref().ok_or_else(|| RevisionError::NoData(name.clone()))?;
    let spec: BlueprintSpec = serde_json::from_value(data.0.clone()).map_err(|e| RevisionError::NotASpec {
        name,
        message: e.to_string(),
    })?;
    Ok(Revision {
        number: cr.revision,
        hash: hash(&spec),
        spec: content(&spec),
    })
}

/// Revision numbers that may be deleted: neither in use (run, pinned, stable or rolling out) nor among the newest `keep`.
pub fn collectable(existing: &[i64], in_use: &BTreeSet<i64>, keep: usize) -> Vec<i64> {
    let mut numbers: Vec<i64> = existing.to_vec();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    numbers.dedup();
    let mut out: Vec<i64> = numbers.into_iter().skip(keep).filter(|n| !in_use.contains(n)).collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_api::rollout::{Rollout, Strategy};

    fn spec(template: &str) -> BlueprintSpec {
        BlueprintSpec {
            description: String::new(),
            parameters: None,
            defaults: Default::default(),
            policy: Default::default(),
            templates: [("a.yaml.hbs".to_owned(), template.to_owned())].into(),
            rollout: None,
        }
    }

    fn rev(number: i64, template: &str) -> Revision {
        Revision {
            number,
            hash: hash(&spec(template)),
            spec: spec(template),
        }
    }

    #[test]
    fn the_first_spec_is_revision_1() {
        let Next::New(r) = next(&[], &spec("x")) else {
            panic!("a new revision")
        };
        assert_eq!((r.number, r.hash.clone()), (1, hash(&spec("x"))));
    }

    #[test]
    fn a_rollout_strategy_change_is_not_a_new_revision() {
        let mut s = spec("x");
        s.rollout = Some(Rollout {
            strategy: Strategy::Canary,
            ..Rollout::default()
        });
        assert_eq!(next(&[rev(1, "x")], &s), Next::Current(1));
        assert_eq!(hash(&s), hash(&spec("x")));
    }

    #[test]
    fn new_content_gets_the_next_number_and_old_content_is_reused() {
        let existing = [rev(1, "x"), rev(2, "y")];
        assert!(matches!(
            next(&existing, &spec("z")),
            Next::New(r) if r.number == 3
        ));
        assert_eq!(next(&existing, &spec("y")), Next::Current(2));
        assert_eq!(next(&existing, &spec("x")), Next::Reuse { old: 1, number: 3 });
    }

    #[test]
    fn the_hash_matches_what_the_renderer_reports() {
        let loaded = crate::render::LoadedBlueprint::compile("t", spec("kind: ConfigMap")).expect("compiles");
        assert_eq!(loaded.hash, hash(&spec("kind: ConfigMap")));
    }

    #[test]
    fn controller_revisions_round_trip_and_are_owned_by_the_blueprint() {
        let mut bp = Blueprint::new("web", spec("x"));
        bp.metadata.uid = Some("uid-1".into());
        let r = rev(4, "x");
        let cr = to_object(&bp, &r, "plinth-system");
        assert_eq!(cr.metadata.name.as_deref(), Some(name("web", &r.hash).as_str()));
        assert!(
            cr.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("web-") && n.len() == 14)
        );
        assert_eq!(cr.revision, 4);
        let owner = &cr.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Blueprint", "uid-1"));
        assert_eq!(from_object(&cr), Ok(r));
    }

    #[test]
    fn a_tampered_revision_is_read_with_the_hash_of_its_data() {
        let bp = Blueprint::new("web", spec("x"));
        let mut cr = to_object(&bp, &rev(1, "x"), "ns");
        cr.data = Some(RawExtension(serde_json::to_value(spec("y")).expect("json")));
        assert_eq!(from_object(&cr).expect("reads").hash, hash(&spec("y")));
        cr.data = Some(RawExtension(serde_json::json!({"templates": 3})));
        assert!(matches!(from_object(&cr), Err(RevisionError::NotASpec { .. })));
    }

    #[test]
    fn revisions_in_use_are_never_collected() {
        let existing: Vec<i64> = (1..=15).collect();
        let in_use: BTreeSet<i64> = [2, 3].into();
        assert_eq!(collectable(&existing, &in_use, 10), vec![1, 4, 5]);
        assert!(collectable(&existing, &(1..=15).collect(), 0).is_empty());
    }
}
