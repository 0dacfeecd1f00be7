//! Which transport a service's calls take, from the config: the migration strategy in one place.

use std::fmt;

use crate::call::Transport;
use crate::config::{Mode, RaftTransport, ServiceRoute, TransportConfig};

/// How calls of one service are routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// One transport, no fallback.
    Only(Transport),
    /// One transport first; `fallback` says whether a failed Iroh call may go over gRPC.
    First {
        /// Tried first.
        transport: Transport,
        /// Fall back to gRPC (only ever from Iroh).
        fallback: bool,
    },
    /// Chosen per peer by measured latency and error rate, with fallback to gRPC if allowed.
    Adaptive {
        /// Fall back to gRPC when the Iroh attempt fails.
        fallback: bool,
    },
}

/// A service's plan and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// How its calls travel.
    pub plan: Plan,
    /// The config rule behind it, as used in metrics (`reason` label).
    pub reason: &'static str,
}

impl TransportConfig {
    /// The route of the service with this config name.
    pub fn route(&self, service: &str) -> Route {
        let m = &self.migration;
        let fallback = m.fallback_to_grpc;
        let (plan, reason) = match self.mode {
            Mode::Grpc => (Plan::Only(Transport::Grpc), "mode_grpc"),
            Mode::Iroh => (Plan::Only(Transport::Iroh), "mode_iroh"),
            Mode::Dual => match self.table_route(service) {
                Some((route, reason)) => (route.plan(fallback), reason),
                None => self.list_route(service),
            },
        };
        Route { plan, reason }
    }

    /// The service's entry in the route table: `routes`, or `raft_transport` for `raft_service`.
    fn table_route(&self, service: &str) -> Option<(ServiceRoute, &'static str)> {
        let m = &self.migration;
        if let Some(route) = m.routes.get(service) {
            return Some((*route, "routes"));
        }
        (service == m.raft_service).then(|| {
            let reason = match m.raft_transport {
                RaftTransport::AlwaysGrpc => "raft_always_grpc",
                RaftTransport::AlwaysIroh => "raft_always_iroh",
                RaftTransport::Adaptive => "raft_adaptive",
            };
            (m.raft_transport.into(), reason)
        })
    }

    /// A Dual-mode service not in the table: by `adaptive_for` and `prefer_iroh_for`, else gRPC.
    fn list_route(&self, service: &str) -> (Plan, &'static str) {
        let m = &self.migration;
        let fallback = m.fallback_to_grpc;
        match () {
            () if m.adaptive_for.iter().any(|s| s == service) => (Plan::Adaptive { fallback }, "adaptive_for"),
            () if m.prefer_iroh_for.iter().any(|s| s == service) => {
                (Plan::First { transport: Transport::Iroh, fallback }, "prefer_iroh_for")
            }
            () => (Plan::Only(Transport::Grpc), "default_grpc"),
        }
    }

    /// A table of the routes of these services, for operators (`duet-node --check-config`).
    pub fn describe_routes<'a>(&self, services: impl IntoIterator<Item = &'a str>) -> String {
        let mut out = format!("{:<16} {:<10} {:<14} {}\n", "service", "first", "falls back to", "why");
        for s in services {
            let r = self.route(s);
            let (first, then) = match r.plan {
                Plan::Only(t) => (t.to_string(), "-".to_string()),
                Plan::First { transport, fallback } => {
                    (transport.to_string(), if fallback { "grpc".into() } else { "-".into() })
                }
                Plan::Adaptive { fallback } => ("adaptive".into(), if fallback { "grpc".into() } else { "-".into() }),
            };
            out.push_str(&format!("{s:<16} {first:<10} {then:<14} {}\n", explain(r.reason)));
        }
        out
    }
}

fn explain(reason: &str) -> &'static str {
    match reason {
        "mode_grpc" => "transport.mode = \"grpc\"",
        "mode_iroh" => "transport.mode = \"iroh\"",
        "raft_always_grpc" => "the Raft service; raft_transport = \"always_grpc\"",
        "raft_always_iroh" => "the Raft service; raft_transport = \"always_iroh\"",
        "raft_adaptive" => "the Raft service; raft_transport = \"adaptive\" (per peer, by latency and errors)",
        "routes" => "its entry in [transport.migration.routes]",
        "adaptive_for" => "listed in adaptive_for (per peer, by latency and errors)",
        "prefer_iroh_for" => "listed in prefer_iroh_for",
        _ => "dual mode: services not in prefer_iroh_for stay on gRPC",
    }
}

impl ServiceRoute {
    fn plan(self, fallback: bool) -> Plan {
        match self {
            ServiceRoute::Grpc => Plan::Only(Transport::Grpc),
            ServiceRoute::Iroh => Plan::First { transport: Transport::Iroh, fallback },
            ServiceRoute::Adaptive => Plan::Adaptive { fallback },
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self.plan, explain(self.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orchestrator_routes() {
        let mut cfg = TransportConfig::default();
        cfg.migration.prefer_iroh_for = vec!["health".into(), "status".into()];
        assert_eq!(cfg.route("health").plan, Plan::First { transport: Transport::Iroh, fallback: true });
        assert_eq!(cfg.route("vm").plan, Plan::Only(Transport::Grpc));
        assert_eq!(cfg.route("raft").reason, "raft_always_grpc");
        cfg.migration.raft_transport = RaftTransport::Adaptive;
        assert_eq!(cfg.route("raft").plan, Plan::Adaptive { fallback: true });
        cfg.mode = Mode::Grpc;
        assert_eq!(cfg.route("health").plan, Plan::Only(Transport::Grpc));
        let table = cfg.describe_routes(["health"]);
        assert!(table.contains("transport.mode = \"grpc\""), "{table}");
    }
}
