//! What the kernel says about a container the real node runs: its process found by the container's
//! cgroup, with its credentials, capabilities, seccomp mode and mounts as `/proc` has them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::Pod;

/// What the kernel says about a container's main process.
#[derive(Debug)]
pub struct ProcessFacts {
    pub pid: u32,
    pub uid: String,
    pub gid: String,
    pub effective_capabilities: String,
    pub no_new_privs: String,
    pub seccomp: String,
    pub root_mount_options: String,
    /// Mount points in the container's mount namespace that are mounted read-write.
    pub writable_mounts: Vec<String>,
}

/// The containerd id of `pod`'s (first) container, once it has one.
pub fn pod_container_id(pod: &Pod) -> Option<String> {
    let container = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let id = container.container_id.as_deref()?;
    Some(id.strip_prefix("containerd://")?.to_owned())
}

/// The process of `pod`'s (first) container.
pub fn pod_process(pod: &Pod) -> ProcessFacts {
    let id = pod_container_id(pod)
        .unwrap_or_else(|| panic!("no containerd container id: {:?}", pod.status));
    container_process(&id)
}

/// The container's first process (its main one), found by the cgroup path that ends in the
/// container's id (the kubelet's cgroupfs layout: `<cgroupRoot>/kubepods/<qos>/pod<uid>/<id>`);
/// none once the container has stopped.
pub fn container_pid(container_id: &str) -> Option<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|cgroup| {
                cgroup
                    .lines()
                    .any(|l| l.contains(":memory:") && l.ends_with(container_id))
            })
        })
        .collect();
    pids.sort_unstable();
    pids.first().copied()
}

/// What the kernel says about the container's main process.
pub fn container_process(container_id: &str) -> ProcessFacts {
    let pid = container_pid(container_id)
        .unwrap_or_else(|| panic!("no process in a cgroup of container {container_id}"));
    let dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(dir.join("status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Its mount namespace: mount point (field 5) and mount options (field 6) of each mount.
    let mountinfo = std::fs::read_to_string(dir.join("mountinfo")).unwrap();
    let mounts: Vec<(String, String)> = mountinfo
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            (fields[4].to_owned(), fields[5].to_owned())
        })
        .collect();
    let root_mount_options = mounts
        .iter()
        .find(|(point, _)| point == "/")
        .map(|(_, options)| options.clone())
        .unwrap_or_default();
    let writable_mounts = mounts
        .into_iter()
        .filter(|(_, options)| options.split(',').any(|o| o == "rw"))
        .map(|(point, _)| point)
        .collect();
    ProcessFacts {
        pid,
        uid: field("Uid"),
        gid: field("Gid"),
        effective_capabilities: field("CapEff"),
        no_new_privs: field("NoNewPrivs"),
        seccomp: field("Seccomp"),
        root_mount_options,
        writable_mounts,
    }
}
