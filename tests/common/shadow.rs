//! A hand-driven group member for the multicast tests: its own node, channel subscriptions and
//! MLS state, answering the control protocol itself (so a test can play a member that misbehaves,
//! or watch the channel's ciphertext as an eavesdropper).

use std::collections::HashMap;
use std::sync::Arc;

use slim_bindings::auth::{SharedSecret, TokenProvider};
use slim_bindings::mls::MlsState;
use slim_bindings::node::{ClientConfig, LocalDelivery, Node};
use slim_bindings::wire::builders::{self, Flags, PublishSpec};
use slim_bindings::wire::{self, Message, Name, SessionMessageType, SessionType};

use super::{WAIT, wait_subscribed};

/// A hand-driven group member on its own node: it answers the control protocol itself and keeps
/// its MLS state and its channel subscription whatever the moderator says.
pub struct Shadow {
    pub name: Name,
    pub token: String,
    pub tx: tokio::sync::mpsc::Sender<Message>,
    pub rx: tokio::sync::mpsc::Receiver<LocalDelivery>,
    pub mls: MlsState,
    _node: Node,
}

impl Shadow {
    pub async fn new(endpoint: &str, hub: &Node, agent: &str, routes: &[Name], channel: &Name) -> Shadow {
        let node = Node::new(agent);
        let lc = node.register_local();
        let conn = node.connect(ClientConfig::insecure(endpoint)).await.unwrap();
        let me = Name::new("org", "ns", agent, Some(4242));
        lc.tx.send(builders::subscribe(&me, &me, Flags::one())).await.unwrap();
        lc.tx.send(builders::subscribe(&me, &me, Flags::one().forward_to(Some(conn)))).await.unwrap();
        lc.tx.send(builders::subscribe(&me, channel, Flags::one())).await.unwrap();
        lc.tx.send(builders::subscribe(&me, channel, Flags::one().forward_to(Some(conn)))).await.unwrap();
        for r in routes.iter().chain([channel]) {
            lc.tx.send(builders::subscribe(&me, r, Flags::one().recv_from(conn))).await.unwrap();
        }
        wait_subscribed(hub, &me).await;
        let id = Arc::new(SharedSecret::new(agent, "secret").unwrap());
        let token = id.get_token().unwrap();
        let mls = MlsState::new(id.clone(), id).unwrap();
        Shadow { name: me, token, tx: lc.tx, rx: lc.rx, mls, _node: node }
    }

    pub async fn send(
        &self,
        kind: SessionMessageType,
        to: &Name,
        sid: u32,
        mid: u32,
        blob: Vec<u8>,
        meta: &[(&str, &str)],
    ) {
        let spec = PublishSpec {
            source: &self.name,
            destination: to,
            // A name without an id is the channel: reach every member.
            flags: if to.has_any_id() { Flags::all(wire::FANOUT_MULTICAST) } else { Flags::one() },
            session_type: SessionType::SessionMulticast,
            message_type: kind,
            session_id: sid,
            message_id: mid,
            original_names: true,
            content_type: "msg",
        };
        let mut md = HashMap::from([(wire::META_IDENTITY.to_string(), self.token.clone())]);
        md.extend(meta.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.tx.send(builders::publish(&spec, blob, md)).await.unwrap();
    }

    pub async fn reply(&self, to: &Message, kind: SessionMessageType, blob: Vec<u8>) {
        let sh = to.session_header().unwrap();
        self.send(kind, &to.source_name().unwrap(), sh.session_id, sh.message_id, blob, &[]).await;
    }

    /// Next publish of `kind` (others are skipped), bounded.
    pub async fn expect(&mut self, kind: SessionMessageType) -> Message {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(LocalDelivery::Message(m)) = self.rx.recv().await
                    && m.session_message_type() == kind
                {
                    return m;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("expected a {kind:?}"))
    }

    /// Answers a moderator's invite by hand: discovery reply, join reply with a key package,
    /// then the MLS welcome is applied and acknowledged; returns the welcome.
    pub async fn join_by_hand(&mut self) -> Message {
        let discovery = self.expect(SessionMessageType::ChannelDiscoveryRequest).await;
        self.reply(&discovery, SessionMessageType::ChannelDiscoveryReply, Vec::new()).await;
        let join = self.expect(SessionMessageType::ChannelJoinRequest).await;
        let kp = self.mls.key_package().unwrap();
        self.reply(&join, SessionMessageType::ChannelJoinReply, kp).await;
        let welcome = self.expect(SessionMessageType::ChannelMlsWelcome).await;
        self.mls.process_welcome(welcome.blob()).unwrap();
        self.reply(&welcome, SessionMessageType::ChannelMlsAck, Vec::new()).await;
        welcome
    }
}
