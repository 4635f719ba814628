//! The kinds a Blueprint may render, typed, in the order they are applied.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;

macro_rules! kinds {
    ($( $variant:ident : $ty:ty ),* $(,)?) => {
        /// One rendered Kubernetes object of an allowed, namespaced kind.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(clippy::large_enum_variant, reason = "a handful per Application, kept in one Vec; boxing buys nothing")]
        pub enum Object {
            $(
                #[doc = concat!("A ", stringify!($variant), ".")]
                $variant($ty),
            )*
        }

        impl serde::Serialize for Object {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self { $( Object::$variant(o) => o.serialize(s), )* }
            }
        }

        impl Object {
            /// `(apiVersion, kind)` of every allowed kind, in apply order.
            pub const ALLOWED: &'static [(&'static str, &'static str)] = &[
                $( (<$ty as k8s_openapi::Resource>::API_VERSION, <$ty as k8s_openapi::Resource>::KIND), )*
            ];

            /// The object's metadata.
            pub fn metadata(&self) -> &ObjectMeta {
                match self { $( Object::$variant(o) => &o.metadata, )* }
            }

            /// The object's metadata, to change.
            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self { $( Object::$variant(o) => &mut o.metadata, )* }
            }

            /// The object's `kind`.
            pub fn kind(&self) -> &'static str {
                match self { $( Object::$variant(_) => <$ty as k8s_openapi::Resource>::KIND, )* }
            }

            /// The object's `apiVersion`.
            pub fn api_version(&self) -> &'static str {
                match self { $( Object::$variant(_) => <$ty as k8s_openapi::Resource>::API_VERSION, )* }
            }

            /// The object as JSON, `apiVersion` and `kind` included (what [`Object::serialize`] writes).
            pub fn to_json(&self) -> serde_json::Value {
                let v = match self { $( Object::$variant(o) => serde_json::to_value(o), )* };
                v.unwrap_or(serde_json::Value::Null)
            }

            /// Deserializes JSON of the given `apiVersion` and `kind`; `None` when the kind is not allowed.
            pub fn from_json(
                api_version: &str,
                kind: &str,
                value: serde_json::Value,
                ignored: &mut Vec<Vec<String>>,
            ) -> Option<Result<Object, (Vec<String>, String)>> {
                $(
                    if api_version == <$ty as k8s_openapi::Resource>::API_VERSION && kind == <$ty as k8s_openapi::Resource>::KIND {
                        return Some(strict::<$ty>(value, ignored).map(Object::$variant));
                    }
                )*
                None
            }

            /// Decodes with `de` an object of the given `apiVersion` and `kind`; `None` when the kind is not allowed.
            pub(crate) fn decode<'de, D: serde::Deserializer<'de>>(
                api_version: &str,
                kind: &str,
                de: D,
            ) -> Option<Result<Object, D::Error>> {
                $(
                    if api_version == <$ty as k8s_openapi::Resource>::API_VERSION && kind == <$ty as k8s_openapi::Resource>::KIND {
                        return Some(<$ty as serde::Deserialize>::deserialize(de).map(Object::$variant));
                    }
                )*
                None
            }
        }
    };
}

// Apply order: identities and permissions first, then the NetworkPolicy, so pods never start unprotected;
// configuration before the workload that reads it; scaling and disruption settings last.
kinds! {
    ServiceAccount: ServiceAccount,
    Role: Role,
    RoleBinding: RoleBinding,
    NetworkPolicy: NetworkPolicy,
    ConfigMap: ConfigMap,
    Service: Service,
    Deployment: Deployment,
    HorizontalPodAutoscaler: HorizontalPodAutoscaler,
    PodDisruptionBudget: PodDisruptionBudget,
}

impl Object {
    /// Position of this object's kind in apply order.
    pub fn apply_rank(&self) -> usize {
        Object::ALLOWED
            .iter()
            .position(|(_, k)| *k == self.kind())
            .unwrap_or(usize::MAX)
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }
}

/// Deserializes `value` as `T`, recording every field `T` does not have, and naming the path of a type error.
fn strict<T: DeserializeOwned>(
    value: serde_json::Value,
    ignored: &mut Vec<Vec<String>>,
) -> Result<T, (Vec<String>, String)> {
    let mut cb = |p: serde_ignored::Path<'_>| ignored.push(segments(&p));
    match T::deserialize(serde_ignored::Deserializer::new(&value, &mut cb)) {
        Ok(t) => Ok(t),
        // Only a failure pays for tracking paths: decode again to say where.
        Err(first) => match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(_) => Err((Vec::new(), first.to_string())),
            Err(e) => {
                let path = e.path().iter().map(|s| s.to_string()).filter(|s| s != "?").collect();
                Err((path, e.into_inner().to_string()))
            }
        },
    }
}

fn segments(p: &serde_ignored::Path<'_>) -> Vec<String> {
    use serde_ignored::Path;
    let mut out = match p {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    };
    match p {
        Path::Seq { index, .. } => out.push(index.to_string()),
        Path::Map { key, .. } => out.push(key.clone()),
        _ => {}
    }
    out
}
