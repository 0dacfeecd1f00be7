//! Which members this node has heard from lately, and over which transport: what `status` shows and
//! what placement and starts go by. The leader hears every member (each answers its heartbeats); a
//! follower hears the leader (its heartbeats arrive), and asks the leader for the rest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use duet::Transport;

use crate::state::NodeId;

/// The fewest heartbeats a member may miss before it counts as not live.
const MISSED_HEARTBEATS: u32 = 10;

/// The shortest liveness window, so a very short heartbeat does not make a slow round trip a death.
const WINDOW_FLOOR: Duration = Duration::from_millis(500);

/// When each member was last heard from.
#[derive(Debug)]
pub struct Liveness {
    seen: Mutex<HashMap<NodeId, Seen>>,
    window: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    over: Option<Transport>,
}

/// One member as this node last heard it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSeen {
    /// How long ago.
    pub ago: Duration,
    /// The transport that carried the last call, when known.
    pub over: Option<Transport>,
    /// Heard from within the liveness window.
    pub live: bool,
}

impl Liveness {
    /// A member counts as live when heard from within ten heartbeats (at least 500 ms): past two
    /// election timeouts, so a member is dead to placement only once Raft would have noticed too.
    pub fn new(heartbeat: Duration) -> Self {
        Self { seen: Mutex::default(), window: (heartbeat * MISSED_HEARTBEATS).max(WINDOW_FLOOR) }
    }

    /// How long a member may be silent and still count as live.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Notes that `id` was heard from just now, over `over` if known.
    pub fn heard(&self, id: NodeId, over: Option<Transport>) {
        let mut seen = self.seen.lock().expect("liveness lock");
        let over = over.or_else(|| seen.get(&id).and_then(|s| s.over));
        seen.insert(id, Seen { at: Instant::now(), over });
    }

    /// When `id` was last heard from; `None` if never.
    pub fn last_seen(&self, id: NodeId) -> Option<LastSeen> {
        let seen = *self.seen.lock().expect("liveness lock").get(&id)?;
        let ago = seen.at.elapsed();
        Some(LastSeen { ago, over: seen.over, live: ago <= self.window })
    }

    /// Whether `id` was heard from within the window.
    pub fn is_live(&self, id: NodeId) -> bool {
        self.last_seen(id).is_some_and(|s| s.live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_live_until_silent_for_the_window() {
        let liveness = Liveness::new(Duration::from_millis(1));
        assert_eq!(liveness.window(), WINDOW_FLOOR);
        assert!(!liveness.is_live(2) && liveness.last_seen(2).is_none(), "never heard");
        liveness.heard(2, Some(Transport::Iroh));
        liveness.heard(2, None);
        let seen = liveness.last_seen(2).unwrap();
        assert!(seen.live && seen.over == Some(Transport::Iroh), "{seen:?}: an unknown transport keeps the last known");
        let short = Liveness { seen: Mutex::default(), window: Duration::ZERO };
        short.heard(3, None);
        std::thread::sleep(Duration::from_millis(2));
        assert!(!short.is_live(3));
    }
}
