//! Phase 3: the VM lifecycle. Writes go through Raft (a follower forwards them to the leader); reads
//! answer from the node's own applied state, so a follower may lag the leader by a heartbeat.

use std::sync::Arc;

use duet::{BoxStream, Request, Response, Status};
use futures_util::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::ctx::{Ctx, is_forwarded, rejected};
use crate::pb::orchestrator::v1::{
    CreateVmRequest, ListVmsReply, ListVmsRequest, Vm, VmEvent, VmRef, VmService, VmState as VmStateProto,
    WatchVmEventsRequest,
};
use crate::state::{Command, Outcome, VmRecord, VmState};

/// `orchestrator.v1.VmService`.
#[derive(Debug, Clone)]
pub struct VmServiceImpl(pub Arc<Ctx>);

/// A VM record as the proto message.
pub fn vm_to_proto(vm: &VmRecord) -> Vm {
    let state = match vm.state {
        VmState::Created => VmStateProto::Created,
        VmState::Running => VmStateProto::Running,
        VmState::Stopped => VmStateProto::Stopped,
        VmState::Deleted => VmStateProto::Deleted,
    };
    Vm {
        name: vm.name.clone(),
        vcpus: vm.vcpus,
        memory_mib: vm.memory_mib,
        image: vm.image.clone(),
        state: state as i32,
        host_node: vm.host,
        revision: vm.revision,
    }
}

impl VmServiceImpl {
    async fn write(&self, command: Command, forwarded: bool) -> Result<Response<Vm>, Status> {
        match self.0.propose(command, forwarded).await? {
            Outcome::Vm(vm) => Ok(Response::new(vm_to_proto(&vm))),
            Outcome::Rejected { kind, message } => Err(rejected(kind, message)),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }
}

fn name_of(request: &VmRef) -> Result<String, Status> {
    if request.name.is_empty() {
        return Err(Status::invalid_argument("name is empty"));
    }
    Ok(request.name.clone())
}

impl VmService for VmServiceImpl {
    async fn create_vm(&self, request: Request<CreateVmRequest>) -> Result<Response<Vm>, Status> {
        let forwarded = is_forwarded(&request);
        let r = request.into_inner();
        crate::state::check_vm(&r.name, r.vcpus, r.memory_mib).map_err(Status::invalid_argument)?;
        // The leader places it again: only it hears which members are live.
        let host = crate::placement::place(&self.0);
        let command =
            Command::CreateVm { name: r.name, vcpus: r.vcpus, memory_mib: r.memory_mib, image: r.image, host };
        self.write(command, forwarded).await
    }

    async fn start_vm(&self, request: Request<VmRef>) -> Result<Response<Vm>, Status> {
        let name = name_of(request.get_ref())?;
        self.write(Command::SetVmState { name, state: VmState::Running }, is_forwarded(&request)).await
    }

    async fn stop_vm(&self, request: Request<VmRef>) -> Result<Response<Vm>, Status> {
        let name = name_of(request.get_ref())?;
        self.write(Command::SetVmState { name, state: VmState::Stopped }, is_forwarded(&request)).await
    }

    async fn delete_vm(&self, request: Request<VmRef>) -> Result<Response<Vm>, Status> {
        let name = name_of(request.get_ref())?;
        self.write(Command::DeleteVm { name }, is_forwarded(&request)).await
    }

    async fn list_vms(&self, _: Request<ListVmsRequest>) -> Result<Response<ListVmsReply>, Status> {
        let vms = self.0.state().vms.values().map(vm_to_proto).collect();
        Ok(Response::new(ListVmsReply { vms }))
    }

    async fn get_vm(&self, request: Request<VmRef>) -> Result<Response<Vm>, Status> {
        let name = name_of(request.get_ref())?;
        let state = self.0.state();
        let vm = state.vms.get(&name).ok_or_else(|| Status::not_found(format!("no VM {name:?}")))?;
        Ok(Response::new(vm_to_proto(vm)))
    }

    async fn watch_vm_events(&self, _: Request<WatchVmEventsRequest>) -> Result<Response<BoxStream<VmEvent>>, Status> {
        let observed_by = self.0.id;
        let events = BroadcastStream::new(self.0.sm.subscribe()).filter_map(move |applied| async move {
            match applied {
                Ok(applied) => match applied.outcome {
                    Outcome::Vm(vm) => Some(Ok(VmEvent { vm: Some(vm_to_proto(&vm)), observed_by })),
                    _ => None,
                },
                Err(BroadcastStreamRecvError::Lagged(n)) => Some(Err(Status::data_loss(format!(
                    "this watcher fell {n} events behind and they are gone; list the VMs and watch again"
                )))),
            }
        });
        // A watcher that lagged gets its error and then the stream ends, rather than a silent gap.
        let mut failed = false;
        let events = events.take_while(move |item| {
            let go = !failed;
            failed |= item.is_err();
            futures_util::future::ready(go)
        });
        Ok(Response::new(Box::pin(events)))
    }
}
