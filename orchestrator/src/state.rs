//! The replicated state: what the Raft log's commands build, identical on every node.
//!
//! `apply` is deterministic and checks every command again, because two proposals that were each valid
//! when the leader accepted them can conflict once ordered in the log (two creates of one name, say).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A Raft node id.
pub type NodeId = u64;

/// The longest VM name, in bytes: a DNS label, so a name can serve as a host name.
pub const MAX_VM_NAME_BYTES: usize = 63;

/// The most virtual CPUs one VM may have.
pub const MAX_VCPUS: u32 = 256;

/// The least and the most memory one VM may have, in MiB (16 MiB to 4 TiB).
pub const VM_MEMORY_MIB: std::ops::RangeInclusive<u32> = 16..=4 << 20;

/// Checks a new VM's name and size (before it is proposed; the log's own check stays as loose as the
/// first version's, so old logs replay alike): a name of letters, digits, `-`, `_` and `.` (not starting with `-`
/// or `.`, at most [`MAX_VM_NAME_BYTES`]), 1 to [`MAX_VCPUS`] vCPUs and memory in [`VM_MEMORY_MIB`].
/// The error says what is wrong and what is allowed.
pub fn check_vm(name: &str, vcpus: u32, memory_mib: u32) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() {
        return Err("a VM needs a name".into());
    }
    if name.len() > MAX_VM_NAME_BYTES || !name.chars().all(allowed) || name.starts_with(['-', '.']) {
        return Err(format!(
            "VM name {name:?} is not allowed: use at most {MAX_VM_NAME_BYTES} letters, digits, `-`, `_` or `.`, \
             not starting with `-` or `.`"
        ));
    }
    if !(1..=MAX_VCPUS).contains(&vcpus) {
        return Err(format!("{vcpus} vCPUs: a VM has 1 to {MAX_VCPUS}"));
    }
    if !VM_MEMORY_MIB.contains(&memory_mib) {
        return Err(format!(
            "{memory_mib} MiB of memory: a VM has {} to {} MiB",
            VM_MEMORY_MIB.start(),
            VM_MEMORY_MIB.end()
        ));
    }
    Ok(())
}

/// A VM's lifecycle state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmState {
    /// Defined, never started.
    Created,
    /// Running on its host node.
    Running,
    /// Stopped; can be started again or deleted.
    Stopped,
    /// Gone; only ever seen in events.
    Deleted,
}

/// One VM as the cluster knows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VmRecord {
    /// Unique name.
    pub name: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Image name, empty for none.
    pub image: String,
    /// Lifecycle state.
    pub state: VmState,
    /// The node the VM is placed on.
    pub host: NodeId,
    /// Log index of the VM's last change.
    pub revision: u64,
}

/// One image as the cluster knows it: its identity and who holds a verified copy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    /// Unique name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole image.
    pub blake3: [u8; 32],
    /// Nodes holding a verified copy.
    pub holders: BTreeSet<NodeId>,
}

/// A command in the Raft log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Define a VM, placed on `host`.
    CreateVm {
        /// Unique name.
        name: String,
        /// Virtual CPUs.
        vcpus: u32,
        /// Memory in MiB.
        memory_mib: u32,
        /// Image name, empty for none.
        image: String,
        /// The node chosen to run it.
        host: NodeId,
    },
    /// Start (`Running`) or stop (`Stopped`) a VM.
    SetVmState {
        /// The VM.
        name: String,
        /// `Running` or `Stopped`.
        state: VmState,
    },
    /// Delete a VM that is not running.
    DeleteVm {
        /// The VM.
        name: String,
    },
    /// Record that `holder` has a verified copy of an image.
    AddImageHolder {
        /// Image name.
        name: String,
        /// Size in bytes.
        size: u64,
        /// BLAKE3 of the whole image.
        blake3: [u8; 32],
        /// The node holding it.
        holder: NodeId,
    },
}

/// Why a command was refused when applied; handlers map it to a gRPC status code.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectKind {
    /// No such VM or image.
    NotFound,
    /// The name is taken (or an image of that name has other content).
    AlreadyExists,
    /// The VM's state does not allow the change.
    FailedPrecondition,
    /// The command itself is malformed.
    InvalidArgument,
}

/// The result of applying one command, returned to the proposer by Raft.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A VM changed; its new record (state `Deleted` for a delete).
    Vm(VmRecord),
    /// An image's record changed.
    Image(ImageRecord),
    /// The command was refused; the state is unchanged.
    Rejected {
        /// Which kind of refusal.
        kind: RejectKind,
        /// For the caller.
        message: String,
    },
    /// Not a command (a membership change or a blank entry).
    None,
}

fn reject(kind: RejectKind, message: impl Into<String>) -> Outcome {
    Outcome::Rejected { kind, message: message.into() }
}

/// Everything the Raft log has built: VMs and images.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// VMs by name (deleted ones are removed).
    pub vms: BTreeMap<String, VmRecord>,
    /// Images by name.
    pub images: BTreeMap<String, ImageRecord>,
}

impl ClusterState {
    /// Applies the command at log `index`, or refuses it and leaves the state as it was.
    pub fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        match command {
            Command::CreateVm { name, vcpus, memory_mib, image, host } => {
                // The looser check of the first version: a log it wrote must apply the same after an
                // upgrade. New creates meet [`check_vm`] before they are proposed.
                if name.is_empty() || *vcpus == 0 || *memory_mib == 0 {
                    return reject(RejectKind::InvalidArgument, "a VM needs a name, vcpus > 0 and memory_mib > 0");
                }
                if self.vms.contains_key(name) {
                    return reject(RejectKind::AlreadyExists, format!("VM {name:?} already exists"));
                }
                if !image.is_empty() && !self.images.contains_key(image) {
                    return reject(RejectKind::NotFound, format!("no image {image:?} in the cluster"));
                }
                let vm = VmRecord {
                    name: name.clone(),
                    vcpus: *vcpus,
                    memory_mib: *memory_mib,
                    image: image.clone(),
                    state: VmState::Created,
                    host: *host,
                    revision: index,
                };
                self.vms.insert(name.clone(), vm.clone());
                Outcome::Vm(vm)
            }
            Command::SetVmState { name, state } => {
                let Some(vm) = self.vms.get_mut(name) else {
                    return reject(RejectKind::NotFound, format!("no VM {name:?}"));
                };
                let allowed = match state {
                    VmState::Running => matches!(vm.state, VmState::Created | VmState::Stopped),
                    VmState::Stopped => vm.state == VmState::Running,
                    VmState::Created | VmState::Deleted => {
                        return reject(RejectKind::InvalidArgument, "a VM can only be set Running or Stopped");
                    }
                };
                if !allowed {
                    return reject(
                        RejectKind::FailedPrecondition,
                        format!("VM {name:?} is {:?}; it cannot become {state:?}", vm.state),
                    );
                }
                vm.state = *state;
                vm.revision = index;
                Outcome::Vm(vm.clone())
            }
            Command::DeleteVm { name } => {
                let Some(vm) = self.vms.get(name) else {
                    return reject(RejectKind::NotFound, format!("no VM {name:?}"));
                };
                if vm.state == VmState::Running {
                    return reject(RejectKind::FailedPrecondition, format!("VM {name:?} is running; stop it first"));
                }
                let mut vm = self.vms.remove(name).expect("checked above");
                vm.state = VmState::Deleted;
                vm.revision = index;
                Outcome::Vm(vm)
            }
            Command::AddImageHolder { name, size, blake3, holder } => {
                if name.is_empty() {
                    return reject(RejectKind::InvalidArgument, "an image needs a name");
                }
                let record = self.images.entry(name.clone()).or_insert_with(|| ImageRecord {
                    name: name.clone(),
                    size: *size,
                    blake3: *blake3,
                    holders: BTreeSet::new(),
                });
                if record.blake3 != *blake3 || record.size != *size {
                    return reject(
                        RejectKind::AlreadyExists,
                        format!("image {name:?} exists with other content (size {}, different hash)", record.size),
                    );
                }
                record.holders.insert(*holder);
                Outcome::Image(record.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str) -> Command {
        Command::CreateVm { name: name.into(), vcpus: 1, memory_mib: 128, image: String::new(), host: 1 }
    }

    #[test]
    fn lifecycle_follows_the_allowed_transitions() {
        let mut s = ClusterState::default();
        assert!(matches!(s.apply(1, &create("a")), Outcome::Vm(VmRecord { state: VmState::Created, .. })));
        assert!(matches!(s.apply(2, &create("a")), Outcome::Rejected { kind: RejectKind::AlreadyExists, .. }));
        let stop = Command::SetVmState { name: "a".into(), state: VmState::Stopped };
        assert!(matches!(s.apply(3, &stop), Outcome::Rejected { kind: RejectKind::FailedPrecondition, .. }));
        let start = Command::SetVmState { name: "a".into(), state: VmState::Running };
        assert!(matches!(s.apply(4, &start), Outcome::Vm(VmRecord { state: VmState::Running, revision: 4, .. })));
        let delete = Command::DeleteVm { name: "a".into() };
        assert!(matches!(s.apply(5, &delete), Outcome::Rejected { kind: RejectKind::FailedPrecondition, .. }));
        s.apply(6, &stop);
        assert!(matches!(s.apply(7, &delete), Outcome::Vm(VmRecord { state: VmState::Deleted, .. })));
        assert!(s.vms.is_empty());
        assert!(matches!(s.apply(8, &start), Outcome::Rejected { kind: RejectKind::NotFound, .. }));
    }

    #[test]
    fn a_vm_needs_a_known_image_and_images_keep_one_content() {
        let mut s = ClusterState::default();
        let vm = Command::CreateVm { name: "a".into(), vcpus: 1, memory_mib: 64, image: "img".into(), host: 1 };
        assert!(matches!(s.apply(1, &vm), Outcome::Rejected { kind: RejectKind::NotFound, .. }));
        let hold = |holder, blake3| Command::AddImageHolder { name: "img".into(), size: 3, blake3, holder };
        assert!(matches!(s.apply(2, &hold(1, [1; 32])), Outcome::Image(_)));
        let Outcome::Image(rec) = s.apply(3, &hold(2, [1; 32])) else { panic!("second holder refused") };
        assert_eq!(rec.holders, BTreeSet::from([1, 2]));
        assert!(matches!(s.apply(4, &hold(3, [2; 32])), Outcome::Rejected { kind: RejectKind::AlreadyExists, .. }));
        assert!(matches!(s.apply(5, &vm), Outcome::Vm(_)));
    }

    #[test]
    fn vm_names_and_sizes_are_checked() {
        assert!(check_vm("web-1.prod_a", 2, 512).is_ok());
        for (name, vcpus, memory, says) in [
            ("", 1, 64, "needs a name"),
            ("a/b", 1, 64, "not allowed"),
            ("../etc", 1, 64, "not allowed"),
            ("-flag", 1, 64, "not allowed"),
            ("sp ace", 1, 64, "not allowed"),
            (&"x".repeat(64), 1, 64, "not allowed"),
            ("ok", 0, 64, "1 to 256"),
            ("ok", 100_000, 64, "1 to 256"),
            ("ok", 1, 1, "16 to 4194304 MiB"),
            ("ok", 1, u32::MAX, "16 to 4194304 MiB"),
        ] {
            let why = check_vm(name, vcpus, memory).expect_err(name);
            assert!(why.contains(says), "{name:?} {vcpus} {memory}: {why}");
        }
        // A log written before these checks still applies as it did: replaying it must not diverge.
        let mut s = ClusterState::default();
        let old = Command::CreateVm { name: "old vm".into(), vcpus: 1, memory_mib: 1, image: String::new(), host: 1 };
        assert!(matches!(s.apply(1, &old), Outcome::Vm(_)));
    }
}
