//! The test bed's volume provisioner: what a local-path provisioner does on a one-node cluster. Every
//! pending claim of a namespace that no volume is meant for gets a `hostPath` PersistentVolume on a
//! folder of its own, pre-bound to the claim, which the control plane's PV controller then binds. The
//! folder belongs to the pods' uid, because the kubelet applies no `fsGroup` to `hostPath` volumes and
//! the node writes its checkpoints there as 65532 on a read-only root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};

/// The uid and gid the project's images run as (distroless `nonroot`).
pub const POD_UID: u32 = 65532;
/// How often pending claims are looked for.
const EVERY: Duration = Duration::from_millis(500);

/// The provisioner's loop for one namespace; stops when dropped.
pub struct Provisioner {
    task: tokio::task::JoinHandle<()>,
    journal: Arc<Mutex<Vec<String>>>,
}

impl Provisioner {
    /// Provisions the claims of `namespace` in folders under `dir`.
    pub fn start(client: Client, namespace: &str, dir: &Path) -> Self {
        let journal = Arc::new(Mutex::new(Vec::new()));
        let (namespace, dir, log) = (namespace.to_owned(), dir.to_path_buf(), journal.clone());
        let task = tokio::spawn(async move {
            loop {
                if let Err(err) = provision(&client, &namespace, &dir, &log).await {
                    note(&log, format!("listing claims and volumes: {err}"));
                }
                tokio::time::sleep(EVERY).await;
            }
        });
        Self { task, journal }
    }

    /// What it did and what failed, one line each.
    pub fn journal(&self) -> String {
        self.journal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }
}

impl Drop for Provisioner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Adds a line, unless it repeats the last one (a failure repeats every pass).
fn note(journal: &Mutex<Vec<String>>, line: String) {
    let mut journal = journal.lock().unwrap_or_else(PoisonError::into_inner);
    if journal.last().is_some_and(|last| last.ends_with(&line)) {
        return;
    }
    let stamp = jiff::Timestamp::now().strftime("%H:%M:%S%.3f");
    journal.push(format!("{stamp} provisioner: {line}"));
}

/// One pass: a volume for every pending claim that has none meant for it.
async fn provision(
    client: &Client,
    namespace: &str,
    dir: &Path,
    journal: &Mutex<Vec<String>>,
) -> Result<(), kube::Error> {
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    let pending: Vec<&PersistentVolumeClaim> = claims
        .iter()
        .filter(|c| c.spec.as_ref().is_none_or(|s| s.volume_name.is_none()))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let volumes = Api::<PersistentVolume>::all(client.clone());
    let meant: BTreeSet<String> = volumes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|v| v.spec.as_ref()?.claim_ref.as_ref())
        .filter(|r| r.namespace.as_deref() == Some(namespace))
        .filter_map(|r| r.name.clone())
        .collect();
    for claim in pending {
        let name = claim.name_any();
        if meant.contains(&name) {
            continue;
        }
        let uid = claim.uid().unwrap_or_default();
        let folder = dir.join("volumes").join(&uid);
        if let Err(err) = owned_folder(&folder) {
            note(
                journal,
                format!("claim {name}: {}: {err}", folder.display()),
            );
            continue;
        }
        let volume = host_path_volume(&format!("e2e-{uid}"), &folder, claim);
        volumes.create(&PostParams::default(), &volume).await?;
        note(
            journal,
            format!("claim {name}: a hostPath volume at {}", folder.display()),
        );
    }
    Ok(())
}

fn owned_folder(folder: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(folder)?;
    std::os::unix::fs::chown(folder, Some(POD_UID), Some(POD_UID))
}

/// A hostPath volume at `dir` pre-bound to `claim`, with the class, size and access it asks for.
pub fn host_path_volume(name: &str, dir: &Path, claim: &PersistentVolumeClaim) -> PersistentVolume {
    let spec = claim.spec.clone().unwrap_or_default();
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                "rlswarm.dev/e2e".to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: spec.resources.and_then(|r| r.requests),
            access_modes: spec.access_modes,
            storage_class_name: spec.storage_class_name,
            host_path: Some(HostPathVolumeSource {
                path: dir.to_string_lossy().into_owned(),
                type_: Some("Directory".into()),
            }),
            claim_ref: Some(ObjectReference {
                namespace: claim.namespace(),
                name: Some(claim.name_any()),
                uid: claim.uid(),
                ..Default::default()
            }),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            ..Default::default()
        }),
        status: None,
    }
}

/// The folder of the hostPath volume bound to claim `name` of `namespace`.
pub async fn claim_folder(client: &Client, namespace: &str, name: &str) -> Result<PathBuf, String> {
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| format!("claim {name}: {e}"))?;
    let volume = claim
        .spec
        .and_then(|s| s.volume_name)
        .ok_or_else(|| format!("claim {name} is not bound"))?;
    Api::<PersistentVolume>::all(client.clone())
        .get(&volume)
        .await
        .map_err(|e| format!("volume {volume}: {e}"))?
        .spec
        .and_then(|s| s.host_path)
        .map(|h| PathBuf::from(h.path))
        .ok_or_else(|| format!("volume {volume} is not a hostPath volume"))
}
