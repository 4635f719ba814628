//! Which Applications move first: early adopters, then a stable hash of the Blueprint and the Application's
//! namespace and name. Deterministic on every replica and across restarts; spread over namespaces. Pure.

use sha2::{Digest, Sha256};

/// An Application a rollout may move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `namespace/name`.
    pub key: String,
    /// Labelled as an early adopter (on itself or its Namespace).
    pub early: bool,
}

/// The sort key: early adopters first, then the hash, then the name (hash ties).
fn rank(blueprint: &str, c: &Candidate) -> (bool, [u8; 32], String) {
    let digest: [u8; 32] = Sha256::digest(format!("{blueprint}/{}", c.key).as_bytes()).into();
    (!c.early, digest, c.key.clone())
}

/// The order in which a rollout of `blueprint` moves `candidates`.
pub fn order(blueprint: &str, mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.sort_by_cached_key(|c| rank(blueprint, c));
    candidates
}

/// Whether a label value marks an early adopter.
pub fn is_early(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                key: format!("ns{}/app{i}", i % 3),
                early: false,
            })
            .collect()
    }

    #[test]
    fn order_does_not_depend_on_the_input_order() {
        let a = order("web", apps(20));
        let mut reversed = apps(20);
        reversed.reverse();
        assert_eq!(order("web", reversed), a);
        assert_ne!(a, apps(20), "a hash order, not the name order");
    }

    #[test]
    fn early_adopters_go_first_in_hash_order() {
        let mut input = apps(20);
        input[7].early = true;
        input[13].early = true;
        let ordered = order("web", input);
        assert!(ordered[0].early && ordered[1].early);
        assert!(ordered[2..].iter().all(|c| !c.early));
    }

    #[test]
    fn adding_an_application_keeps_the_others_in_their_order() {
        let before: Vec<String> = order("web", apps(20)).into_iter().map(|c| c.key).collect();
        let mut more = apps(20);
        more.push(Candidate {
            key: "other/new".into(),
            early: false,
        });
        let after: Vec<String> = order("web", more)
            .into_iter()
            .map(|c| c.key)
            .filter(|k| k != "other/new")
            .collect();
        assert_eq!(after, before);
    }

    #[test]
    fn early_labels_are_true_only() {
        assert!(is_early(Some("true")) && is_early(Some("True")));
        assert!(!is_early(Some("yes")) && !is_early(None));
    }
}
