//! The inspection API: `slim.mesh.v1.NodeInfo/Get` on the node's data-plane port(s), behind the
//! same TLS and transport auth as the data plane. It answers what the node knows: its links
//! (peer, direction, up/down, counters), its routes (name → next hop, cost) and, for a mesh node,
//! every node of the mesh it has heard of.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tonic::codegen::BoxFuture;
use tonic::{Request, Response, Status};

use super::proto::{self, LinkInfo, MeshNodeInfo, NodeInfoReply, NodeInfoRequest, RouteInfo};
use crate::node::{ClientConfig, Inner, NodeError};
use crate::wire::Name;

/// gRPC service name of the inspection API.
pub const SERVICE_NAME: &str = "slim.mesh.v1.NodeInfo";
/// HTTP/2 path of the one inspection RPC.
pub const NODE_INFO_PATH: &str = "/slim.mesh.v1.NodeInfo/Get";
/// Routes in a reply when the request does not say.
pub const DEFAULT_MAX_ROUTES: u32 = 1000;
/// Most routes a reply carries, whatever the request says.
pub const MAX_ROUTES: u32 = 20_000;

/// The server side of `NodeInfo/Get` for one node.
pub(crate) struct NodeInfoMethod(pub Arc<Inner>);

impl tonic::server::UnaryService<NodeInfoRequest> for NodeInfoMethod {
    type Response = NodeInfoReply;
    type Future = BoxFuture<Response<NodeInfoReply>, Status>;

    fn call(&mut self, request: Request<NodeInfoRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { Ok(Response::new(describe(&inner, request.get_ref()))) })
    }
}

/// Asks the node at `cfg` (a client dict: endpoint, TLS, auth) what it knows, over the same TLS
/// and transport auth as a data-plane link.
pub async fn fetch(cfg: ClientConfig, max_routes: u32, name_filter: &str) -> Result<NodeInfoReply, NodeError> {
    use crate::node::transport::{DEFAULT_CONNECT_BUDGET, DialError, Dialer, error_chain};
    let request = NodeInfoRequest { max_routes, name_filter: name_filter.to_string() };
    let endpoint = cfg.endpoint.clone();
    let fail = |reason: String| NodeError::ConnectFailed { endpoint: endpoint.clone(), attempts: 1, reason };
    let budget = cfg.connect_timeout.filter(|t| !t.is_zero()).unwrap_or(DEFAULT_CONNECT_BUDGET);
    let hello = super::Hello { node: 0, mesh: false, notify: false, label: "node-info".into() };
    let dialer = Dialer::new(cfg, hello)?;
    let call = async {
        let reason = |e: DialError| match e {
            DialError::Retry(r) | DialError::Fatal(r) => r,
        };
        let channel = dialer.channel().await.map_err(|e| fail(reason(e)))?;
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(crate::wire::MAX_MESSAGE_SIZE);
        grpc.ready().await.map_err(|e| fail(error_chain(&e)))?;
        let mut req = Request::new(request);
        dialer.request_metadata(req.metadata_mut()).map_err(|e| fail(reason(e)))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(NODE_INFO_PATH);
        grpc.unary(req, path, tonic_prost::ProstCodec::default())
            .await
            .map(Response::into_inner)
            .map_err(|s| fail(format!("{}: {}", s.code(), s.message())))
    };
    tokio::time::timeout(budget, call).await.map_err(|_| fail("timed out".into()))?
}

fn name_text(n: &Name) -> String {
    let id = n.id();
    let id = if n.has_any_id() { "*".to_string() } else { format!("{id:x}") };
    format!("{}/{id}", n.short())
}

/// The reply for one node (also what the tests read in-process).
pub(crate) fn describe(inner: &Inner, req: &NodeInfoRequest) -> NodeInfoReply {
    let mesh = &inner.mesh;
    let limit = match req.max_routes {
        0 => DEFAULT_MAX_ROUTES,
        n => n.min(MAX_ROUTES),
    } as usize;
    let view = mesh.view.lock().clone();
    let labels: HashMap<u64, String> = view.iter().map(|v| (v.node, v.label.clone())).collect();
    let label_of = |n: u64| labels.get(&n).cloned().unwrap_or_default();

    let links: Vec<LinkInfo> = inner
        .links()
        .into_iter()
        .map(|l| LinkInfo {
            conn: l.conn,
            kind: l.kind.as_str().into(),
            direction: l.direction.as_str().into(),
            peer: l.peer,
            up: l.up,
            peer_node: l.peer_node.unwrap_or(0),
            peer_label: l.peer_label.unwrap_or_default(),
            messages_in: l.messages_in,
            messages_out: l.messages_out,
        })
        .collect();
    let kinds: HashMap<u64, &str> =
        links.iter().map(|l| (l.conn, if l.kind == "local" { "local" } else { "attached" })).collect();

    let mut routes = Vec::new();
    let mut total = 0u64;
    let wanted = |text: &str| req.name_filter.is_empty() || text.contains(&req.name_filter);
    {
        let subs = inner.subs.read();
        for l in &links {
            for n in subs.names_of(l.conn) {
                let text = name_text(&n);
                if !wanted(&text) {
                    continue;
                }
                total += 1;
                if routes.len() < limit {
                    routes.push(RouteInfo {
                        name: text,
                        kind: kinds.get(&l.conn).copied().unwrap_or("attached").into(),
                        conn: l.conn,
                        cost: 0,
                        ..Default::default()
                    });
                }
            }
        }
    }
    {
        let table = mesh.routes.read();
        for (name, candidates) in table.entries() {
            let text = name_text(name);
            if !wanted(&text) {
                continue;
            }
            for c in candidates {
                total += 1;
                if routes.len() < limit {
                    routes.push(RouteInfo {
                        name: text.clone(),
                        kind: "mesh".into(),
                        conn: c.conn,
                        next_hop_node: c.via,
                        next_hop_label: label_of(c.via),
                        cost: c.cost,
                        origin: c.origin,
                        origin_label: label_of(c.origin),
                    });
                }
            }
        }
    }
    routes.sort_by(|a, b| (&a.name, a.cost).cmp(&(&b.name, b.cost)));

    let mut nodes: Vec<MeshNodeInfo> = view
        .iter()
        .map(|v| MeshNodeInfo {
            node: v.node,
            label: v.label.clone(),
            reachable: v.reachable,
            cost: v.cost,
            names: v.names,
            seq: v.seq,
            links: v.links.iter().map(|&(node, cost)| proto::Adjacency { node, cost }).collect(),
        })
        .collect();
    nodes.sort_by_key(|n| (n.cost, n.node));

    let s = inner.stats.snapshot();
    let m = &mesh.stats;
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let counters: HashMap<String, u64> = [
        ("messages_received", s.messages_received),
        ("messages_routed", s.messages_routed),
        ("dropped_no_route", s.dropped_no_route),
        ("dropped_closed", s.dropped_closed),
        ("mesh_notices_sent", r(&m.notices_sent)),
        ("mesh_notices_shed", r(&m.notices_shed)),
        ("mesh_control_received", r(&m.control_received)),
        ("mesh_control_sent", r(&m.control_sent)),
        ("mesh_recomputes", r(&m.recomputes)),
    ]
    .into_iter()
    .chain(m.drops())
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    NodeInfoReply {
        node_id: mesh.node,
        label: mesh.label.clone(),
        mesh: mesh.enabled(),
        links,
        routes,
        routes_total: total,
        nodes,
        counters,
    }
}

/// The reply as JSON (what `python -m slim_bindings node-info --json` prints).
pub fn to_json(r: &NodeInfoReply) -> serde_json::Value {
    use serde_json::json;
    let hex = |n: u64| if n == 0 { String::new() } else { format!("{n:016x}") };
    json!({
        "node_id": hex(r.node_id),
        "label": r.label,
        "mesh": r.mesh,
        "links": r.links.iter().map(|l| json!({
            "conn": l.conn, "kind": l.kind, "direction": l.direction, "peer": l.peer, "up": l.up,
            "peer_node": hex(l.peer_node), "peer_label": l.peer_label,
            "messages_in": l.messages_in, "messages_out": l.messages_out,
        })).collect::<Vec<_>>(),
        "routes": r.routes.iter().map(|x| json!({
            "name": x.name, "kind": x.kind, "conn": x.conn, "next_hop_node": hex(x.next_hop_node),
            "next_hop_label": x.next_hop_label, "cost": x.cost, "origin": hex(x.origin), "origin_label": x.origin_label,
        })).collect::<Vec<_>>(),
        "routes_total": r.routes_total,
        "nodes": r.nodes.iter().map(|n| json!({
            "node": hex(n.node), "label": n.label, "reachable": n.reachable, "cost": n.cost, "names": n.names,
            "seq": n.seq, "links": n.links.iter().map(|a| hex(a.node)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "counters": r.counters,
    })
}
