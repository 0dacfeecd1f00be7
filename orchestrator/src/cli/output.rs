//! What `client` prints: one struct per answer, serialized as-is for `--output json` and rendered as
//! tables or `key: value` lines for people.
//!
//! The structs are the JSON contract scripts rely on: snake_case names, numbers as numbers, unset
//! values as `null` (never `0` or `""` standing for "none"), and the transport that answered. They are
//! not the generated proto messages, whose JSON carries enums as integers and empty strings for
//! absent values.

use std::fmt::Write as _;

use duet_orchestrator::pb::grpc::health::v1::health_check_response::ServingStatus;
use duet_orchestrator::pb::orchestrator::v1::{
    ClusterStatusReply, ImageInfo, Member, RaftStatusReply, Vm, VmEvent, VmState,
};
use serde::Serialize;

use super::table::{Align, Table, ago, cell, human_size, or_dash};

/// How `client` prints answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Tables and `key: value` lines, for people.
    #[default]
    Text,
    /// One JSON document per call (one object per line for `watch-vms`), for scripts.
    Json,
}

/// An answer `client` can print either way.
pub trait Answer: Serialize {
    /// The answer for a person, ending in a newline.
    fn text(&self) -> String;

    /// Prints the answer to stdout as `output` asks.
    fn print(&self, output: Output) -> Result<(), serde_json::Error> {
        match output {
            Output::Text => print!("{}", self.text()),
            Output::Json => println!("{}", serde_json::to_string(self)?),
        }
        Ok(())
    }
}

/// The first line of most answers: who answered, and over which transport (in duet, either may).
fn answered(node: Option<u64>, transport: Option<&str>) -> String {
    let over = transport.unwrap_or("an unknown transport");
    match node {
        Some(id) => format!("answered by node {id} over {over}\n"),
        None => format!("answered over {over}\n"),
    }
}

/// `Some(value)` unless it is the proto's "unset" zero value.
fn set<T: Default + PartialEq>(value: T) -> Option<T> {
    (value != T::default()).then_some(value)
}

/// `ClusterStatus/GetClusterStatus`.
#[derive(Debug, Serialize)]
pub struct StatusOut {
    /// The transport that carried the call.
    pub transport: Option<String>,
    /// The node that answered.
    pub node_id: u64,
    /// `None` while no leader is known.
    pub leader_id: Option<u64>,
    /// The Raft term.
    pub term: u64,
    /// The log index the answering node has applied.
    pub commit_index: u64,
    /// Every member, as the answering node sees it.
    pub members: Vec<MemberOut>,
}

/// One cluster member.
#[derive(Debug, Serialize)]
pub struct MemberOut {
    /// Node id.
    pub id: u64,
    /// Node name.
    pub name: String,
    /// `leader`, `voter` or `learner`.
    pub role: &'static str,
    /// Heard from within the liveness window.
    pub live: bool,
    /// Milliseconds since last heard from; `None` when never.
    pub last_seen_ms: Option<u64>,
    /// `grpc` or `iroh`: what last carried a call to it; `None` when nothing has.
    pub reachable_over: Option<String>,
    /// Its gRPC address.
    pub grpc_address: Option<String>,
    /// Its Iroh endpoint id.
    pub iroh_id: Option<String>,
    /// Its full peer address ticket.
    pub ticket: String,
}

impl StatusOut {
    /// The reply, as answered over `transport`.
    pub fn new(transport: Option<String>, s: ClusterStatusReply) -> Self {
        Self {
            transport,
            node_id: s.node_id,
            leader_id: set(s.leader_id),
            term: s.term,
            commit_index: s.commit_index,
            members: s.members.into_iter().map(MemberOut::from).collect(),
        }
    }
}

impl From<Member> for MemberOut {
    fn from(m: Member) -> Self {
        let role = match (m.leader, m.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        Self {
            id: m.id,
            name: m.name,
            role,
            live: m.live,
            last_seen_ms: m.last_seen_ms,
            reachable_over: set(m.reachable_over),
            grpc_address: set(m.grpc_address),
            iroh_id: set(m.iroh_id),
            ticket: m.ticket,
        }
    }
}

/// A leader id as a sentence fragment; id 0 is the proto's "no leader".
fn leader_text(leader: Option<u64>) -> String {
    leader.map_or_else(|| "no leader".into(), |id| format!("leader node {id}"))
}

impl Answer for StatusOut {
    fn text(&self) -> String {
        let mut out = answered(Some(self.node_id), self.transport.as_deref());
        let _ =
            writeln!(out, "{}, term {}, commit index {}", leader_text(self.leader_id), self.term, self.commit_index);
        if self.members.is_empty() {
            out.push_str("no members\n");
            return out;
        }
        let mut t = Table::new(&[
            ("ID", Align::Right),
            ("NAME", Align::Left),
            ("ROLE", Align::Left),
            ("LIVE", Align::Left),
            ("LAST SEEN", Align::Left),
            ("REACHABLE OVER", Align::Left),
            ("GRPC ADDRESS", Align::Left),
            ("IROH ID", Align::Left),
        ]);
        for m in &self.members {
            t.row(vec![
                m.id.to_string(),
                m.name.clone(),
                m.role.into(),
                if m.live { "yes" } else { "no" }.into(),
                ago(m.last_seen_ms),
                or_dash(m.reachable_over.as_deref().unwrap_or_default()),
                or_dash(m.grpc_address.as_deref().unwrap_or_default()),
                // An endpoint id is 64 hex digits; a prefix tells members apart, JSON has it whole.
                or_dash(&short_id(m.iroh_id.as_deref().unwrap_or_default())),
            ]);
        }
        out + &t.render(0)
    }
}

/// The first characters of a long hex id, as `git` shortens hashes.
fn short_id(id: &str) -> String {
    super::table::ellipsis(id, 13)
}

/// `ClusterStatus/GetRaftStatus`.
#[derive(Debug, Serialize)]
pub struct RaftOut {
    /// The transport that carried the call.
    pub transport: Option<String>,
    /// The node that answered.
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// The Raft term.
    pub term: u64,
    /// `None` while no leader is known.
    pub leader_id: Option<u64>,
    /// Last index in the node's log.
    pub last_log_index: u64,
    /// Last index the node applied.
    pub last_applied_index: u64,
    /// Each follower's progress; only the leader knows it.
    pub followers: Vec<FollowerOut>,
}

/// A follower's replication progress.
#[derive(Debug, Serialize)]
pub struct FollowerOut {
    /// Node id.
    pub id: u64,
    /// Highest log index known replicated on it.
    pub matched_index: u64,
}

impl RaftOut {
    /// The reply, as answered over `transport`.
    pub fn new(transport: Option<String>, r: RaftStatusReply) -> Self {
        Self {
            transport,
            node_id: r.node_id,
            role: r.role,
            term: r.term,
            leader_id: set(r.leader_id),
            last_log_index: r.last_log_index,
            last_applied_index: r.last_applied_index,
            followers: r
                .followers
                .into_iter()
                .map(|f| FollowerOut { id: f.id, matched_index: f.matched_index })
                .collect(),
        }
    }
}

impl Answer for RaftOut {
    fn text(&self) -> String {
        let mut out = answered(Some(self.node_id), self.transport.as_deref());
        let leader = self.leader_id.map_or_else(|| "none".into(), |id| format!("node {id}"));
        let _ = write!(
            out,
            "role: {}\nterm: {}\nleader: {leader}\nlast log index: {}\nlast applied index: {}\n",
            cell(&self.role),
            self.term,
            self.last_log_index,
            self.last_applied_index
        );
        if self.followers.is_empty() {
            // Only a leader tracks followers; on another node an empty list says nothing.
            if self.role == "leader" {
                out.push_str("followers: none\n");
            }
            return out;
        }
        out.push_str("followers:\n");
        let mut t = Table::new(&[("NODE", Align::Right), ("MATCHED INDEX", Align::Right)]);
        for f in &self.followers {
            t.row(vec![f.id.to_string(), f.matched_index.to_string()]);
        }
        out + &t.render(2)
    }
}

/// `grpc.health.v1.Health/Check`.
#[derive(Debug, Serialize)]
pub struct HealthOut {
    /// The transport that carried the call.
    pub transport: Option<String>,
    /// `serving`, `not_serving`, `service_unknown` or `unknown`.
    pub status: &'static str,
}

impl HealthOut {
    /// The reply's status, as answered over `transport`.
    pub fn new(transport: Option<String>, status: ServingStatus) -> Self {
        let status = match status {
            ServingStatus::Serving => "serving",
            ServingStatus::NotServing => "not_serving",
            ServingStatus::ServiceUnknown => "service_unknown",
            ServingStatus::Unknown => "unknown",
        };
        Self { transport, status }
    }
}

impl Answer for HealthOut {
    fn text(&self) -> String {
        answered(None, self.transport.as_deref()) + &format!("status: {}\n", self.status.replace('_', " "))
    }
}

/// `Monitoring/GetMetrics`.
#[derive(Debug, Serialize)]
pub struct MetricsOut {
    /// The transport that carried the call.
    pub transport: Option<String>,
    /// The node's metrics in the Prometheus text format.
    pub prometheus_text: String,
}

impl Answer for MetricsOut {
    fn text(&self) -> String {
        // Bare, so it can be piped to anything that reads the Prometheus format.
        self.prometheus_text.clone()
    }
}

/// A VM.
#[derive(Debug, Serialize)]
pub struct VmOut {
    /// Name.
    pub name: String,
    /// `created`, `running`, `stopped`, `deleted` (or `unspecified` from a confused server).
    pub state: &'static str,
    /// The node it is placed on; `None` while unplaced.
    pub host_node: Option<u64>,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// Its image; `None` for none.
    pub image: Option<String>,
    /// The Raft log index of its last change.
    pub revision: u64,
}

impl From<Vm> for VmOut {
    fn from(vm: Vm) -> Self {
        let state = match vm.state() {
            VmState::Unspecified => "unspecified",
            VmState::Created => "created",
            VmState::Running => "running",
            VmState::Stopped => "stopped",
            VmState::Deleted => "deleted",
        };
        Self {
            state,
            name: vm.name,
            host_node: set(vm.host_node),
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            image: set(vm.image),
            revision: vm.revision,
        }
    }
}

impl VmOut {
    /// `node N`, or `no node` while unplaced.
    fn host_text(&self) -> String {
        self.host_node.map_or_else(|| "no node".into(), |id| format!("node {id}"))
    }
}

/// `VmService/ListVms`.
#[derive(Debug, Serialize)]
pub struct VmsOut {
    /// The transport that carried the call.
    pub transport: Option<String>,
    /// Every VM the node knows, deleted ones included.
    pub vms: Vec<VmOut>,
}

impl Answer for VmsOut {
    fn text(&self) -> String {
        let out = answered(None, self.transport.as_deref());
        if self.vms.is_empty() {
            return out + "no VMs\n";
        }
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("STATE", Align::Left),
            ("NODE", Align::Right),
            ("VCPUS", Align::Right),
            ("MEMORY", Align::Right),
            ("IMAGE", Align::Left),
            ("REVISION", Align::Right),
        ]);
        for vm in &self.vms {
            t.row(vec![
                vm.name.clone(),
                vm.state.into(),
                vm.host_node.map_or_else(|| "-".into(), |id| id.to_string()),
                vm.vcpus.to_string(),
                format!("{} MiB", vm.memory_mib),
                or_dash(vm.image.as_deref().unwrap_or_default()),
                vm.revision.to_string(),
            ]);
        }
        out + &t.render(0)
    }
}

/// A VM a create, start, stop or delete answered with.
#[derive(Debug, Serialize)]
pub struct VmChangeOut {
    /// The transport that carried the call.
    pub transport: Option<String>,
    /// The VM after the change.
    pub vm: VmOut,
    /// What was done, for the text's sentence: `created`, `started`, `stopped`, `deleted`.
    #[serde(skip)]
    pub done: &'static str,
}

impl Answer for VmChangeOut {
    fn text(&self) -> String {
        let vm = &self.vm;
        let mut out = answered(None, self.transport.as_deref());
        let _ = write!(
            out,
            "{} VM {}\nstate: {}\nhost: {}\nvcpus: {}\nmemory: {} MiB\nimage: {}\nrevision: {}\n",
            self.done,
            cell(&vm.name),
            vm.state,
            vm.host_text(),
            vm.vcpus,
            vm.memory_mib,
            vm.image.as_deref().map_or_else(|| "none".into(), cell),
            vm.revision
        );
        out
    }
}

/// One line of `watch-vms`.
#[derive(Debug, Serialize)]
pub struct VmEventOut {
    /// The transport that carries the stream.
    pub transport: Option<String>,
    /// The node that applied the change.
    pub observed_by: u64,
    /// The VM after the change.
    pub vm: VmOut,
}

impl VmEventOut {
    /// The event, as streamed over `transport`.
    pub fn new(transport: Option<String>, e: VmEvent) -> Self {
        Self { transport, observed_by: e.observed_by, vm: e.vm.unwrap_or_default().into() }
    }
}

impl Answer for VmEventOut {
    fn text(&self) -> String {
        // A stream cannot size columns ahead of its rows: one sentence per event.
        let vm = &self.vm;
        format!(
            "{}: {} on {} (revision {}, applied by node {})\n",
            cell(&vm.name),
            vm.state,
            vm.host_text(),
            vm.revision,
            self.observed_by
        )
    }
}

/// An image.
#[derive(Debug, Serialize)]
pub struct ImageOut {
    /// Name.
    pub name: String,
    /// Size, bytes.
    pub size: u64,
    /// Hex BLAKE3 of the whole image.
    pub blake3: String,
    /// Nodes that hold a verified copy.
    pub holders: Vec<u64>,
}

impl From<ImageInfo> for ImageOut {
    fn from(i: ImageInfo) -> Self {
        Self { name: i.name, size: i.size, blake3: i.blake3_hex, holders: i.holders }
    }
}

/// Holders as `1, 2, 3`, or `none`.
fn holders_text(holders: &[u64]) -> String {
    if holders.is_empty() {
        return "none".into();
    }
    holders.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// `ImageService/ListImages`.
#[derive(Debug, Serialize)]
pub struct ImagesOut {
    /// The transport that carried the call.
    pub transport: Option<String>,
    /// Every image the cluster knows.
    pub images: Vec<ImageOut>,
}

impl Answer for ImagesOut {
    fn text(&self) -> String {
        let out = answered(None, self.transport.as_deref());
        if self.images.is_empty() {
            return out + "no images\n";
        }
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("SIZE", Align::Right),
            ("BLAKE3", Align::Left),
            ("HOLDERS", Align::Left),
        ]);
        for i in &self.images {
            t.row(vec![i.name.clone(), human_size(i.size), short_id(&i.blake3), holders_text(&i.holders)]);
        }
        out + &t.render(0)
    }
}

/// An image an upload or a pull answered with.
#[derive(Debug, Serialize)]
pub struct ImageChangeOut {
    /// The transport that carried the call.
    pub transport: Option<String>,
    /// The image as the node now holds it.
    pub image: ImageOut,
    /// What was done, for the text's sentence: `uploaded`, `pulled`.
    #[serde(skip)]
    pub done: &'static str,
}

impl Answer for ImageChangeOut {
    fn text(&self) -> String {
        let i = &self.image;
        let mut out = answered(None, self.transport.as_deref());
        let _ = write!(
            out,
            "{} image {}\nsize: {} ({} bytes)\nblake3: {}\nheld by nodes: {}\n",
            self.done,
            cell(&i.name),
            human_size(i.size),
            i.size,
            i.blake3,
            holders_text(&i.holders)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, leader: bool) -> Member {
        Member {
            id,
            name: name.into(),
            ticket: format!("duet:grpc=127.0.0.1:700{id}"),
            grpc_address: format!("127.0.0.1:700{id}"),
            voter: true,
            leader,
            live: id != 3,
            last_seen_ms: (id != 3).then_some(400 * (id - 1)),
            ..Member::default()
        }
    }

    #[test]
    fn status_names_the_leader_and_lines_up_long_names() {
        let reply = ClusterStatusReply {
            members: vec![
                member(1, "node-1", true),
                member(2, "a-much-longer-node-name", false),
                member(3, "n3", false),
            ],
            leader_id: 1,
            term: 2,
            commit_index: 9,
            node_id: 1,
        };
        let text = StatusOut::new(Some("iroh".into()), reply).text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "answered by node 1 over iroh");
        assert_eq!(lines[1], "leader node 1, term 2, commit index 9");
        let role_at = lines[2].find("ROLE").unwrap();
        for row in &lines[3..] {
            assert!(["leader", "voter"].iter().any(|r| row[role_at..].starts_with(r)), "{text}");
        }
        assert!(lines[4].contains("0.4 s ago") && lines[5].contains("never"), "{text}");
    }

    #[test]
    fn no_leader_is_said_in_words() {
        let text = StatusOut::new(None, ClusterStatusReply::default()).text();
        assert!(text.contains("no leader") && !text.contains("leader 0"), "{text}");
        let json = serde_json::to_value(StatusOut::new(None, ClusterStatusReply::default())).unwrap();
        assert!(json["leader_id"].is_null());
    }

    #[test]
    fn empty_lists_say_so() {
        assert!(VmsOut { transport: None, vms: vec![] }.text().ends_with("no VMs\n"));
        assert!(ImagesOut { transport: None, images: vec![] }.text().ends_with("no images\n"));
    }

    #[test]
    fn a_vm_change_is_key_value_lines_and_plain_json() {
        let vm = Vm {
            name: "web-1".into(),
            vcpus: 2,
            memory_mib: 512,
            state: VmState::Running as i32,
            host_node: 3,
            revision: 7,
            ..Vm::default()
        };
        let out = VmChangeOut { transport: Some("grpc".into()), vm: vm.into(), done: "started" };
        assert_eq!(
            out.text(),
            "answered over grpc\nstarted VM web-1\nstate: running\nhost: node 3\nvcpus: 2\nmemory: 512 MiB\nimage: none\nrevision: 7\n"
        );
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"transport":"grpc","vm":{"name":"web-1","state":"running","host_node":3,"vcpus":2,"memory_mib":512,"image":null,"revision":7}}"#
        );
    }
}
