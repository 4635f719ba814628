//! The Pod Security Standards "restricted" profile, checked on every pod template a Blueprint renders.

use k8s_openapi::api::core::v1::{Container, PodSpec, SecurityContext};

/// Every way `pod` breaks the restricted profile, as `(path below the pod spec, what is wrong)`.
pub fn restricted_violations(pod: &PodSpec) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let p = |segs: &[&str]| segs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    for (flag, name) in [
        (pod.host_network, "hostNetwork"),
        (pod.host_pid, "hostPID"),
        (pod.host_ipc, "hostIPC"),
    ] {
        if flag == Some(true) {
            out.push((p(&[name]), format!("{name} must not be true")));
        }
    }
    const VOLUME_TYPES: [&str; 8] = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for (i, v) in pod.volumes.iter().flatten().enumerate() {
        let json = serde_json::to_value(v).unwrap_or_default();
        if let Some(obj) = json.as_object() {
            for key in obj.keys().filter(|k| *k != "name") {
                if !VOLUME_TYPES.contains(&key.as_str()) {
                    out.push((
                        vec!["volumes".into(), i.to_string(), key.clone()],
                        format!(
                            "volume type {key} is not allowed; use one of {}",
                            VOLUME_TYPES.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    let pod_sc = pod.security_context.as_ref();
    let pod_non_root = pod_sc.and_then(|s| s.run_as_non_root);
    let pod_seccomp = pod_sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|s| s.type_.as_str());
    if pod_non_root == Some(false) {
        out.push((
            p(&["securityContext", "runAsNonRoot"]),
            "runAsNonRoot must not be false".into(),
        ));
    }
    if pod_sc.and_then(|s| s.run_as_user) == Some(0) {
        out.push((
            p(&["securityContext", "runAsUser"]),
            "runAsUser must not be 0 (root)".into(),
        ));
    }
    if let Some(t) = pod_seccomp.filter(|t| !matches!(*t, "RuntimeDefault" | "Localhost")) {
        out.push((
            p(&["securityContext", "seccompProfile", "type"]),
            format!("seccompProfile type {t} is not allowed; use RuntimeDefault"),
        ));
    }
    for s in pod_sc.and_then(|s| s.sysctls.as_ref()).into_iter().flatten() {
        const SAFE: [&str; 5] = [
            "kernel.shm_rmid_forced",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.ip_unprivileged_port_start",
            "net.ipv4.tcp_syncookies",
            "net.ipv4.ping_group_range",
        ];
        if !SAFE.contains(&s.name.as_str()) {
            out.push((
                p(&["securityContext", "sysctls"]),
                format!("sysctl {} is not allowed", s.name),
            ));
        }
    }
    let groups: [(&str, Vec<&Container>); 2] = [
        ("containers", pod.containers.iter().collect()),
        ("initContainers", pod.init_containers.iter().flatten().collect()),
    ];
    for (field, containers) in groups {
        for (i, c) in containers.iter().enumerate() {
            let at = |leaf: &[&str]| {
                let mut v = vec![field.to_owned(), i.to_string()];
                v.extend(leaf.iter().map(|s| (*s).to_owned()));
                v
            };
            check_container(c, pod_non_root, pod_seccomp, &at, &mut out);
        }
    }
    if pod.ephemeral_containers.as_ref().is_some_and(|e| !e.is_empty()) {
        out.push((
            p(&["ephemeralContainers"]),
            "ephemeral containers cannot be rendered".into(),
        ));
    }
    out
}

fn check_container(
    c: &Container,
    pod_non_root: Option<bool>,
    pod_seccomp: Option<&str>,
    at: &dyn Fn(&[&str]) -> Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) {
    let default_sc = SecurityContext::default();
    let sc = c.security_context.as_ref().unwrap_or(&default_sc);
    if sc.privileged == Some(true) {
        out.push((
            at(&["securityContext", "privileged"]),
            "privileged must not be true".into(),
        ));
    }
    if sc.allow_privilege_escalation != Some(false) {
        out.push((
            at(&["securityContext", "allowPrivilegeEscalation"]),
            "allowPrivilegeEscalation must be false".into(),
        ));
    }
    let caps = sc.capabilities.as_ref();
    if !caps
        .and_then(|c| c.drop.as_ref())
        .is_some_and(|d| d.iter().any(|x| x == "ALL"))
    {
        out.push((
            at(&["securityContext", "capabilities", "drop"]),
            "capabilities.drop must include ALL".into(),
        ));
    }
    for cap in caps.and_then(|c| c.add.as_ref()).into_iter().flatten() {
        if cap != "NET_BIND_SERVICE" {
            out.push((
                at(&["securityContext", "capabilities", "add"]),
                format!("capability {cap} may not be added (only NET_BIND_SERVICE)"),
            ));
        }
    }
    match (sc.run_as_non_root, pod_non_root) {
        (Some(true), _) | (None, Some(true)) => {}
        _ => out.push((
            at(&["securityContext", "runAsNonRoot"]),
            "runAsNonRoot must be true, on the pod or the container".into(),
        )),
    }
    if sc.run_as_user == Some(0) {
        out.push((
            at(&["securityContext", "runAsUser"]),
            "runAsUser must not be 0 (root)".into(),
        ));
    }
    let seccomp = sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()).or(pod_seccomp);
    if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
        out.push((
            at(&["securityContext", "seccompProfile"]),
            "seccompProfile type must be RuntimeDefault (or Localhost), on the pod or the container".into(),
        ));
    }
    if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
        out.push((
            at(&["securityContext", "procMount"]),
            "procMount must be Default".into(),
        ));
    }
    for (i, port) in c.ports.iter().flatten().enumerate() {
        if port.host_port.is_some_and(|h| h != 0) {
            out.push((
                at(&["ports", &i.to_string(), "hostPort"]),
                "hostPort is not allowed".into(),
            ));
        }
    }
}
