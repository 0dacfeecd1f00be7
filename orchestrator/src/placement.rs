//! What the leader decides before a VM command enters the log, because only it hears every member:
//! where a new VM goes (the live voter with the fewest VMs) and whether a VM may start (its host must
//! be live). A follower places a new VM by what it hears itself before forwarding it, so the command
//! is complete whoever commits it (a leader of the first version, or this node should it have just
//! become leader); the leader places it again.

use duet::Status;

use crate::ctx::Ctx;
use crate::state::{Command, NodeId, VmState};

/// `command` as the leader commits it: a new VM placed on a live member, a start refused when the
/// VM's host is not live.
pub fn at_leader(ctx: &Ctx, command: Command) -> Result<Command, Status> {
    match command {
        Command::CreateVm { name, vcpus, memory_mib, image, .. } => {
            let host = place(ctx);
            tracing::info!(vm = %name, host, "placing a new VM");
            Ok(Command::CreateVm { name, vcpus, memory_mib, image, host })
        }
        Command::SetVmState { name, state: VmState::Running } => {
            let host = ctx.state().vms.get(&name).map(|vm| vm.host);
            if let Some(host) = host
                && host != ctx.id
                && !ctx.liveness.is_live(host)
            {
                let heard = match ctx.liveness.last_seen(host) {
                    Some(seen) => format!("last heard from {:.1} s ago", seen.ago.as_secs_f64()),
                    None => "never heard from since this node became leader".to_owned(),
                };
                return Err(Status::failed_precondition(format!(
                    "VM {name:?} is placed on node {host}, which is not live ({heard}); bring node {host} back, \
                     or delete the VM and create it again to place it on a live node"
                )));
            }
            Ok(Command::SetVmState { name, state: VmState::Running })
        }
        other => Ok(other),
    }
}

/// The live voter with the fewest VMs, lowest id on a tie, as this node hears the members; this node
/// when no other voter is live.
pub fn place(ctx: &Ctx) -> NodeId {
    let state = ctx.state();
    ctx.members()
        .into_iter()
        .filter(|(id, _, voter)| *voter && (*id == ctx.id || ctx.liveness.is_live(*id)))
        .map(|(id, _, _)| (state.vms.values().filter(|vm| vm.host == id).count(), id))
        .min()
        .map_or(ctx.id, |(_, id)| id)
}
