//! What the router is asked to do: the one mailbox through which apps (via their handle),
//! backbones (via the intake) and the bus's lifecycle reach it. Requests that want an answer
//! carry a oneshot sender for it.

use jiff::SignedDuration;
use tokio::sync::oneshot;

use crate::BusError;
use crate::catchup::{Replay, Work};
use crate::message::Message;
use crate::queue::{RequesterRoom, SubscriberId, SubscriberOptions, SubscriberReceiver};

/// Requests to the router.
pub(crate) enum Command {
    /// Deliver a message that the backbone handed back.
    Route(Message),
    AddSubscriber {
        options: SubscriberOptions,
        /// The app the subscriber belongs to, for its metrics.
        app: &'static str,
        reply: oneshot::Sender<Result<SubscriberReceiver, BusError>>,
    },
    Subscribe {
        id: SubscriberId,
        topics: Vec<String>,
        snapshot: Option<SignedDuration>,
        reply: oneshot::Sender<Result<Option<String>, BusError>>,
    },
    Unsubscribe {
        id: SubscriberId,
        topics: Vec<String>,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    RemoveSubscriber {
        id: SubscriberId,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    /// Whether anyone reads the subscriber's queue (see `BusHandle::set_listening`).
    SetListening {
        id: SubscriberId,
        listening: bool,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    /// Answers to snapshot `snapshot_id` from this instance (the store): delivered to the
    /// requester like the bodies of envelopes, without envelopes and in one command.
    SnapshotAnswers {
        snapshot_id: String,
        bodies: Vec<Message>,
        /// `None` when the requester is gone; else the bodies that did not fit (yet).
        reply: oneshot::Sender<Option<Vec<Message>>>,
    },
    /// Free slots in the queue of the subscriber that asked for snapshot `snapshot_id`;
    /// `None` when this instance did not issue that id (or forgot it), or the subscriber is
    /// gone or not listening.
    SnapshotRoom {
        snapshot_id: String,
        reply: oneshot::Sender<Option<RequesterRoom>>,
    },
    /// How many messages wait in subscriber queues (for draining on shutdown).
    QueuedMessages { reply: oneshot::Sender<usize> },
    /// The catch-up worker asks what to read next.
    CatchUpWork { reply: oneshot::Sender<Work> },
    /// The catch-up worker hands back what it read.
    CatchUpReplay {
        replay: Replay,
        reply: oneshot::Sender<()>,
    },
    /// Update the gauges that are only read at scrape time.
    RefreshGauges { reply: oneshot::Sender<()> },
}
