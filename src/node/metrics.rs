//! The node's metric catalogue: every series the node reports, written once. The exporters in
//! [`crate::telemetry`] (the `/metrics` text endpoint and OTLP) read a [`MetricSource`] made here
//! by [`source`], and know nothing of the node.

use super::{ConnectionQueue, LinkInfo, LinkKind, Node, NodeStatsSnapshot};
use crate::telemetry::metrics::{LabelValue, MetricDesc, MetricSource, Sample};

/// What one node reports at one instant.
struct Figures {
    stats: NodeStatsSnapshot,
    /// Subscriptions in the table, summed over connections.
    subscriptions: u64,
    queues: Vec<ConnectionQueue>,
    /// The session-layer counters of the app embedding the node ([`Node::attach_counters`]).
    attached: Vec<(&'static str, u64)>,
    /// gRPC links (local app connections left out).
    links: Vec<LinkInfo>,
    /// Mesh drops: hop limit, off tree, no route in transit, control messages undeliverable.
    mesh_dropped: [(&'static str, u64); 4],
    /// Names with a route through another mesh node.
    mesh_routes: u64,
}

/// Extra labels and the value of one series of a metric (the `node` label comes first, added by
/// [`read`]).
type Series = (Vec<(&'static str, LabelValue)>, u64);

/// One metric and how to read its series from a node's [`Figures`].
struct NodeMetric {
    desc: MetricDesc,
    read: fn(&Figures) -> Vec<Series>,
}

/// A series with no label beyond `node`.
fn one(value: u64) -> Vec<Series> {
    vec![(Vec::new(), value)]
}

/// Labels of one gRPC link: connection id, kind (leaf/mesh), the peer (its node label when it is
/// one of ours, else its address).
fn link_labels(l: &LinkInfo) -> Vec<(&'static str, LabelValue)> {
    let peer = l.peer_label.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| l.peer.clone());
    vec![
        ("conn", LabelValue::Int(l.conn as i64)),
        ("kind", LabelValue::Text(l.kind.as_str().into())),
        ("peer", LabelValue::Text(peer)),
    ]
}

/// The catalogue, in the order the text endpoint prints it.
static NODE_METRICS: [NodeMetric; 17] = [
    NodeMetric {
        desc: MetricDesc::counter("slim.messages.received", "Messages read from any connection."),
        read: |f| one(f.stats.messages_received),
    },
    NodeMetric {
        desc: MetricDesc::counter(
            "slim.messages.routed",
            "Messages handed to an outbound connection (one per target).",
        ),
        read: |f| one(f.stats.messages_routed),
    },
    NodeMetric {
        desc: MetricDesc::counter("slim.subscriptions.processed", "Subscribe/Unsubscribe messages applied."),
        read: |f| one(f.stats.subscriptions_processed),
    },
    NodeMetric {
        desc: MetricDesc::gauge("slim.subscriptions", "Subscriptions currently in the table (per connection entry)."),
        read: |f| one(f.subscriptions),
    },
    NodeMetric {
        desc: MetricDesc::counter("slim.connections.opened", "Connections opened since start."),
        read: |f| one(f.stats.connections_opened),
    },
    NodeMetric {
        desc: MetricDesc::counter("slim.connections.closed", "Connections closed since start."),
        read: |f| one(f.stats.connections_closed),
    },
    NodeMetric {
        desc: MetricDesc::gauge("slim.connections.active", "Connections open now."),
        read: |f| one(f.stats.active_connections),
    },
    NodeMetric {
        desc: MetricDesc::counter("slim.reconnects", "Successful reconnects of client connections."),
        read: |f| one(f.stats.reconnects),
    },
    NodeMetric {
        desc: MetricDesc::counter(
            "slim.error_reports.deferred",
            "Error notifications that found a local app's queue full (merged, taken later).",
        ),
        read: |f| one(f.stats.error_reports_deferred),
    },
    NodeMetric {
        desc: MetricDesc::counter("slim.messages.dropped", "Messages dropped, by reason."),
        read: |f| {
            let s = &f.stats;
            [
                ("invalid", s.dropped_invalid),
                ("no_route", s.dropped_no_route),
                ("connection_closed", s.dropped_closed),
                ("bad_subscription", s.dropped_subscription),
                ("malformed", s.dropped_malformed),
            ]
            .into_iter()
            .map(|(reason, v)| (vec![("reason", LabelValue::Text(reason.into()))], v))
            .collect()
        },
    },
    NodeMetric {
        desc: MetricDesc::counter(
            "slim.session.events",
            "Session-layer drops, loss reports and rejections of the app embedding the node, by event \
             (catalogue: docs/reliability.md).",
        ),
        read: |f| {
            f.attached.iter().map(|(event, v)| (vec![("event", LabelValue::Text((*event).into()))], *v)).collect()
        },
    },
    NodeMetric {
        desc: MetricDesc::gauge("slim.queue.depth", "Messages waiting in all outbound connection queues."),
        read: |f| one(f.queues.iter().map(|q| q.depth as u64).sum()),
    },
    NodeMetric {
        desc: MetricDesc::gauge(
            "slim.connection.queue.depth",
            "Messages waiting in one connection's outbound queue (bound 1024).",
        ),
        read: |f| {
            f.queues
                .iter()
                .map(|q| {
                    let kind = if q.local { "local" } else { "remote" };
                    let labels =
                        vec![("conn", LabelValue::Int(q.conn as i64)), ("kind", LabelValue::Text(kind.into()))];
                    (labels, q.depth as u64)
                })
                .collect()
        },
    },
    NodeMetric {
        desc: MetricDesc::counter(
            "slim.link.messages",
            "Messages that crossed one gRPC link, by direction (mesh control traffic not counted).",
        ),
        read: |f| {
            f.links
                .iter()
                .flat_map(|l| {
                    [("in", l.messages_in), ("out", l.messages_out)].map(|(dir, v)| {
                        let mut labels = link_labels(l);
                        labels.push(("direction", LabelValue::Text(dir.into())));
                        (labels, v)
                    })
                })
                .collect()
        },
    },
    NodeMetric {
        desc: MetricDesc::gauge("slim.link.up", "1 while a gRPC link is connected, 0 while it reconnects."),
        read: |f| f.links.iter().map(|l| (link_labels(l), u64::from(l.up))).collect(),
    },
    NodeMetric {
        desc: MetricDesc::counter(
            "slim.mesh.dropped",
            "Messages dropped between mesh nodes, by reason (hop_limit: a loop caught while routes changed; \
             control: mesh control messages a closing link could not take).",
        ),
        read: |f| {
            f.mesh_dropped
                .iter()
                .map(|(name, v)| {
                    let reason = name.trim_start_matches("mesh_dropped_");
                    (vec![("reason", LabelValue::Text(reason.into()))], *v)
                })
                .collect()
        },
    },
    NodeMetric {
        desc: MetricDesc::gauge("slim.mesh.routes", "Names reachable through other mesh nodes."),
        read: |f| one(f.mesh_routes),
    },
];

/// The metrics of `nodes`, read afresh each time an exporter asks (labelled `node=<node id>`).
pub fn source(nodes: &[Node]) -> MetricSource {
    let nodes = nodes.to_vec();
    MetricSource::new(NODE_METRICS.iter().map(|m| m.desc).collect(), move |out| read(&nodes, out))
}

/// Appends every series of every node to `out`.
fn read(nodes: &[Node], out: &mut Vec<Sample>) {
    for node in nodes {
        let figures = Figures {
            stats: node.stats(),
            subscriptions: node.connection_ids().into_iter().map(|c| node.subscriptions_of(c).len() as u64).sum(),
            queues: node.queue_depths(),
            attached: node.attached_counters(),
            links: node.links().into_iter().filter(|l| l.kind != LinkKind::Local).collect(),
            mesh_dropped: node.mesh_stats().drops(),
            mesh_routes: node.mesh_route_count() as u64,
        };
        for metric in &NODE_METRICS {
            for (labels, value) in (metric.read)(&figures) {
                let mut all = Vec::with_capacity(labels.len() + 1);
                all.push(("node", LabelValue::Text(node.node_id().to_string())));
                all.extend(labels);
                out.push(Sample { metric: metric.desc.name, labels: all, value });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::QUEUE_CAPACITY;
    use crate::telemetry::metrics::render;

    #[test]
    fn exposition_has_help_type_and_labelled_samples() {
        let text = render(&source(&[Node::new("n\"1")]));
        assert!(text.contains("# TYPE slim_messages_routed_total counter"), "{text}");
        assert!(text.contains("slim_messages_routed_total{node=\"n\\\"1\"} 0"), "{text}");
        assert!(text.contains("slim_messages_dropped_total{node=\"n\\\"1\",reason=\"no_route\"} 0"), "{text}");
        assert!(text.contains("# TYPE slim_queue_depth gauge"), "{text}");
        assert!(text.contains("slim_queue_depth{node=\"n\\\"1\"} 0"), "{text}");
        assert!(text.contains("slim_mesh_dropped_total{node=\"n\\\"1\",reason=\"hop_limit\"} 0"), "{text}");
        assert!(text.contains("slim_mesh_routes{node=\"n\\\"1\"} 0"), "{text}");
        assert!(text.contains("slim_mesh_dropped_total{node=\"n\\\"1\",reason=\"control\"} 0"), "{text}");
    }

    #[test]
    fn counters_of_the_embedding_app_are_shown_by_event() {
        let node = Node::new("n");
        node.attach_counters(std::sync::Arc::new(|| vec![("session_queue_dropped", 7)]));
        let text = render(&source(&[node]));
        assert!(text.contains("# TYPE slim_session_events_total counter"), "{text}");
        assert!(text.contains("slim_session_events_total{node=\"n\",event=\"session_queue_dropped\"} 7"), "{text}");
    }

    #[test]
    fn queue_bound_in_the_help_text_is_the_real_one() {
        assert!(NODE_METRICS.iter().any(|m| m.desc.help.contains(&format!("(bound {QUEUE_CAPACITY})"))));
    }
}
