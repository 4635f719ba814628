//! The desired state of one Application: rendered objects as apply-ready JSON in served versions, with owner references and content hashes. Pure.

use std::fmt::Write as _;

use plinth_api::Application;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::kinds::{Kind, Served};
use crate::render::Rendered;

/// Identifies a child object within its Application's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildKey {
    /// Its kind (apply order).
    pub kind: Kind,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for ChildKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.name(), self.name)
    }
}

/// One object to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObject {
    /// Kind and name.
    pub key: ChildKey,
    /// The template that rendered it.
    pub template: String,
    /// `apiVersion` it is applied as.
    pub api_version: String,
    /// The full object, owner reference included.
    pub json: Value,
    /// `sha256:` of `json`.
    pub hash: String,
}

/// Every object of one Application, in apply order, with a hash of them all.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Objects in apply order.
    pub objects: Vec<DesiredObject>,
    /// `sha256:` over every object: equal hashes mean nothing to apply.
    pub hash: String,
}

/// Why a rendered set cannot be applied to this API server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    /// The server serves no version of a kind the Blueprint renders.
    #[error("the API server serves no version of {kind} that Plinth knows ({wanted}); {name} cannot be applied")]
    NotServed {
        /// The kind.
        kind: &'static str,
        /// The versions Plinth can apply.
        wanted: String,
        /// The object's name.
        name: String,
    },
    /// A field of the newest version has no equivalent in the version the server serves.
    #[error("{kind} {name} sets {field}, which {api_version} (the version this API server serves) does not have")]
    FieldNotServed {
        /// The kind.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The field path.
        field: &'static str,
        /// The served version.
        api_version: String,
    },
    /// The renderer produced a kind the controller does not manage (a bug).
    #[error("rendered kind {0} is not one the controller manages")]
    UnknownKind(String),
}

/// The owner reference every child carries.
pub fn owner_reference(app: &Application) -> Value {
    json!({
        "apiVersion": plinth_api::API_VERSION,
        "kind": "Application",
        "name": app.metadata.name.clone().unwrap_or_default(),
        "uid": app.metadata.uid.clone().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Turns a render into what is applied: served versions, owner references, hashes.
///
/// # Errors
/// When the server lacks a kind or a field the render needs; nothing is applied then.
pub fn build(rendered: &Rendered, app: &Application, served: &Served) -> Result<Desired, DesiredError> {
    let owner = owner_reference(app);
    let mut objects = Vec::with_capacity(rendered.objects.len());
    for r in &rendered.objects {
        let kind =
            Kind::from_name(r.object.kind()).ok_or_else(|| DesiredError::UnknownKind(r.object.kind().to_owned()))?;
        let name = r.object.name().to_owned();
        let version = served.version(kind).ok_or_else(|| DesiredError::NotServed {
            kind: kind.name(),
            wanted: kind
                .versions()
                .iter()
                .map(|v| kind.api_version(v))
                .collect::<Vec<_>>()
                .join(" or "),
            name: name.clone(),
        })?;
        let api_version = kind.api_version(version);
        let mut json = r.object.to_json();
        if kind == Kind::PodDisruptionBudget
            && version == "v1beta1"
            && json.pointer("/spec/unhealthyPodEvictionPolicy").is_some()
        {
            return Err(DesiredError::FieldNotServed {
                kind: kind.name(),
                name,
                field: "spec.unhealthyPodEvictionPolicy",
                api_version,
            });
        }
        if let Some(map) = json.as_object_mut() {
            map.insert("apiVersion".into(), Value::String(api_version.clone()));
            map.insert("kind".into(), Value::String(kind.name().to_owned()));
            // Server-side apply must not carry these; the renderer never sets them, but be sure.
            if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                for k in [
                    "resourceVersion",
                    "uid",
                    "creationTimestamp",
                    "managedFields",
                    "generation",
                ] {
                    meta.remove(k);
                }
                meta.insert("ownerReferences".into(), Value::Array(vec![owner.clone()]));
            }
            map.remove("status");
        }
        let hash = sha256(&serde_json::to_vec(&json).unwrap_or_default());
        objects.push(DesiredObject {
            key: ChildKey { kind, name },
            template: r.template.clone(),
            api_version,
            json,
            hash,
        });
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let mut all = Sha256::new();
    for o in &objects {
        all.update(o.hash.as_bytes());
        all.update(b"\n");
    }
    Ok(Desired {
        objects,
        hash: hex("sha256:", &all.finalize()),
    })
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    hex("sha256:", &Sha256::digest(bytes))
}

fn hex(prefix: &str, digest: &[u8]) -> String {
    let mut s = String::with_capacity(prefix.len() + digest.len() * 2);
    s.push_str(prefix);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Builders shared by the controller's unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::render::{Platform, bundled, render};

    /// An Application `shop` in namespace `team` (uid `u-1`) with the given spec JSON.
    pub(crate) fn app(spec: &str) -> Application {
        let mut app: Application = serde_json::from_value(serde_json::json!({
            "apiVersion": "plinth.dev/v1alpha1",
            "kind": "Application",
            "metadata": {"name": "shop", "namespace": "team", "uid": "u-1", "generation": 1},
            "spec": serde_json::from_str::<Value>(spec).expect("spec json"),
        }))
        .expect("an Application");
        app.metadata.generation = Some(1);
        app
    }

    /// The bundled `web` render of `app`.
    pub(crate) fn rendered(app: &Application) -> Rendered {
        let bps = bundled::loaded().expect("bundled Blueprints load");
        render(app, &bps["web"], &Platform::default()).expect("renders")
    }

    /// The desired state of `shop` with this spec on a current API server.
    pub(crate) fn desired_for(spec: &str) -> Desired {
        let a = app(spec);
        build(&rendered(&a), &a, &Served::newest()).expect("builds")
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::{app, rendered};
    use super::*;

    #[test]
    fn objects_carry_the_owner_reference_in_apply_order() {
        let a = app(r#"{"image":"ghcr.io/acme/shop:1.0","port":8080,"replicas":3}"#);
        let d = build(&rendered(&a), &a, &Served::newest()).expect("builds");
        let kinds: Vec<Kind> = d.objects.iter().map(|o| o.key.kind).collect();
        let mut sorted = kinds.clone();
        sorted.sort();
        assert_eq!(kinds, sorted);
        let np = kinds
            .iter()
            .position(|k| *k == Kind::NetworkPolicy)
            .expect("a NetworkPolicy");
        let deploy = kinds.iter().position(|k| *k == Kind::Deployment).expect("a Deployment");
        assert!(np < deploy, "the NetworkPolicy is applied before the Deployment");
        for o in &d.objects {
            assert_eq!(o.json["metadata"]["ownerReferences"][0]["uid"], "u-1", "{}", o.key);
            assert_eq!(o.json["metadata"]["ownerReferences"][0]["controller"], true);
            assert_eq!(o.json["metadata"]["labels"]["app.kubernetes.io/managed-by"], "plinth");
            assert_eq!(o.json["metadata"]["namespace"], "team");
        }
    }

    #[test]
    fn hash_is_stable_and_follows_the_spec() {
        let a = app(r#"{"image":"ghcr.io/acme/shop:1.0","port":8080}"#);
        let one = build(&rendered(&a), &a, &Served::newest()).expect("builds");
        let two = build(&rendered(&a), &a, &Served::newest()).expect("builds");
        assert_eq!(one.hash, two.hash);
        let b = app(r#"{"image":"ghcr.io/acme/shop:1.1","port":8080}"#);
        let three = build(&rendered(&b), &b, &Served::newest()).expect("builds");
        assert_ne!(one.hash, three.hash);
        let changed: Vec<String> = one
            .objects
            .iter()
            .zip(&three.objects)
            .filter(|(x, y)| x.hash != y.hash)
            .map(|(x, _)| x.key.to_string())
            .collect();
        assert_eq!(
            changed,
            ["Deployment shop"],
            "only the Deployment changes with the image"
        );
    }

    #[test]
    fn older_servers_get_the_equivalent_older_versions() {
        let a = app(r#"{"image":"ghcr.io/acme/shop:1.0","port":8080,"autoscale":{"min":2,"max":5}}"#);
        let mut pairs: Vec<(Kind, &'static str)> = Kind::ALL.iter().map(|k| (*k, k.versions()[0])).collect();
        for p in &mut pairs {
            if p.0 == Kind::HorizontalPodAutoscaler {
                p.1 = "v2beta2";
            }
            if p.0 == Kind::PodDisruptionBudget {
                p.1 = "v1beta1";
            }
        }
        let d = build(&rendered(&a), &a, &Served::from_pairs(&pairs)).expect("builds");
        let version = |k: Kind| {
            d.objects
                .iter()
                .find(|o| o.key.kind == k)
                .map(|o| o.json["apiVersion"].clone())
        };
        assert_eq!(
            version(Kind::HorizontalPodAutoscaler),
            Some(json!("autoscaling/v2beta2"))
        );
        assert_eq!(version(Kind::PodDisruptionBudget), Some(json!("policy/v1beta1")));
        assert_eq!(version(Kind::Deployment), Some(json!("apps/v1")));
    }

    #[test]
    fn a_kind_the_server_lacks_is_an_error_not_a_partial_apply() {
        let a = app(r#"{"image":"ghcr.io/acme/shop:1.0","port":8080,"autoscale":{"min":2,"max":5}}"#);
        let pairs: Vec<(Kind, &'static str)> = Kind::ALL
            .iter()
            .filter(|k| **k != Kind::HorizontalPodAutoscaler)
            .map(|k| (*k, k.versions()[0]))
            .collect();
        let err = build(&rendered(&a), &a, &Served::from_pairs(&pairs)).expect_err("refused");
        assert!(
            err.to_string().contains("autoscaling/v2 or autoscaling/v2beta2"),
            "{err}"
        );
    }
}
