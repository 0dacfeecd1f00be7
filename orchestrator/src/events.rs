//! The node's own story at info level, each event once, as Raft's view changes: elections, the
//! leader, membership. An operator reading the log (or a JSON collector) follows the cluster from it.

use std::collections::BTreeSet;

use tokio::task::JoinHandle;

use crate::raft::Raft;
use crate::state::NodeId;

/// Logs this node's Raft changes until Raft shuts down.
pub fn spawn(raft: Raft, id: NodeId) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let mut leader: Option<Option<NodeId>> = None;
        let mut members: Option<(BTreeSet<NodeId>, BTreeSet<NodeId>)> = None;
        loop {
            let (now_leader, term, now_members) = {
                let m = metrics.borrow_and_update();
                let membership = m.membership_config.membership();
                let voters: BTreeSet<_> = membership.voter_ids().collect();
                let learners: BTreeSet<_> = membership.learner_ids().collect();
                (m.current_leader, m.current_term, (voters, learners))
            };
            if leader != Some(now_leader) {
                match now_leader {
                    Some(l) if l == id => tracing::info!(node = id, term, "elected leader"),
                    Some(l) => tracing::info!(node = id, leader = l, term, "following a new leader"),
                    // No leader at start is the normal state, not news.
                    None if leader.is_some() => tracing::info!(node = id, term, "leader lost; election under way"),
                    None => {}
                }
                leader = Some(now_leader);
            }
            if members.as_ref() != Some(&now_members) && !(now_members.0.is_empty() && now_members.1.is_empty()) {
                let (voters, learners) = &now_members;
                tracing::info!(node = id, ?voters, ?learners, "cluster membership");
                members = Some(now_members);
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    })
}
