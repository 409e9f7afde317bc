//! Where messages enter the router: what local apps publish ([`Outbound`], straight to the
//! router when this instance is alone, else through the backbone) and what the backbone hands
//! back from every instance ([`Inbound`]).

use tokio::sync::mpsc;

use crate::BusError;
use crate::command::Command;
use crate::message::Message;
use crate::metrics::Counter;

/// Where published messages go: to the backbone, or, when the backbone only loops messages
/// back to this instance, straight to the router (one hop and one task less per message).
#[derive(Clone)]
pub(crate) struct Outbound {
    route: Route,
    /// Messages handed to the backbone, per kind.
    sent: [Counter; 4],
}

#[derive(Clone)]
enum Route {
    Backbone(mpsc::Sender<Message>),
    Loopback(mpsc::Sender<Command>),
}

impl Outbound {
    /// Published messages go to the backbone (counted in `sent`, per kind).
    pub(crate) fn to_backbone(backbone: mpsc::Sender<Message>, sent: [Counter; 4]) -> Self {
        Self {
            route: Route::Backbone(backbone),
            sent,
        }
    }

    /// This instance is alone: published messages go straight to the router (one hop and one
    /// task less per message than through a backbone that hands everything back).
    pub(crate) fn loopback(router: mpsc::Sender<Command>, sent: [Counter; 4]) -> Self {
        Self {
            route: Route::Loopback(router),
            sent,
        }
    }

    pub(crate) async fn send(&self, message: Message) -> Result<(), BusError> {
        self.sent[message.body().topic_index()].inc();
        let sent = match &self.route {
            Route::Backbone(tx) => tx.send(message).await.is_ok(),
            Route::Loopback(tx) => tx.send(Command::Route(message)).await.is_ok(),
        };
        if sent { Ok(()) } else { Err(BusError::Stopped) }
    }

    pub(crate) fn blocking_send(&self, message: Message) -> Result<(), BusError> {
        self.sent[message.body().topic_index()].inc();
        let sent = match &self.route {
            Route::Backbone(tx) => tx.blocking_send(message).is_ok(),
            Route::Loopback(tx) => tx.blocking_send(Command::Route(message)).is_ok(),
        };
        if sent { Ok(()) } else { Err(BusError::Stopped) }
    }

    /// Messages waiting for the backbone (the router's own channel is counted apart).
    pub(crate) fn queued(&self) -> usize {
        match &self.route {
            Route::Backbone(tx) => tx.max_capacity() - tx.capacity(),
            Route::Loopback(_) => 0,
        }
    }
}

/// Hands messages from a backbone to the router.
#[derive(Clone)]
pub struct Inbound {
    router: mpsc::Sender<Command>,
}

impl Inbound {
    pub(crate) fn new(router: mpsc::Sender<Command>) -> Self {
        Self { router }
    }

    /// Routes `message` to the local subscribers; waits while the router is busy.
    pub async fn deliver(&self, message: Message) -> Result<(), BusError> {
        self.router
            .send(Command::Route(message))
            .await
            .map_err(|_| BusError::Stopped)
    }
}
