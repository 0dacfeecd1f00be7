//! Where a VM actually runs: the hypervisor behind a trait, and a simulated one.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::state::{VmRecord, VmState};

/// A node's hypervisor. The cluster decides (through Raft) what each VM should be; once a change is
/// committed, the VM's host node calls its backend to make the machine match. A Firecracker or
/// cloud-hypervisor backend implements this; [`SimBackend`] needs none.
pub trait VmBackend: Send + Sync + 'static {
    /// Brings the VM `vm.name` to `vm.state` on this node. Errors are logged: the committed state
    /// stays the cluster's intent, for the operator (or a reconcile loop) to act on.
    fn reconcile(&self, vm: &VmRecord) -> Result<(), String>;

    /// The VMs this node's hypervisor has, and their state.
    fn inventory(&self) -> BTreeMap<String, VmState>;
}

/// A simulated hypervisor: it keeps what it was told, so a node "runs" VMs with no hypervisor. The
/// cluster's state itself lives in the Raft log; this is only the host's local view.
#[derive(Debug, Default)]
pub struct SimBackend {
    vms: Mutex<BTreeMap<String, VmState>>,
}

impl VmBackend for SimBackend {
    fn reconcile(&self, vm: &VmRecord) -> Result<(), String> {
        let mut vms = self.vms.lock().expect("sim backend lock");
        match vm.state {
            VmState::Deleted => {
                vms.remove(&vm.name);
            }
            state => {
                vms.insert(vm.name.clone(), state);
            }
        }
        Ok(())
    }

    fn inventory(&self) -> BTreeMap<String, VmState> {
        self.vms.lock().expect("sim backend lock").clone()
    }
}
