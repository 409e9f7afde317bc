//! The core's routing, snapshot and queue behaviour, driven through the public API with an
//! identity backbone (what the in-memory backbone does).

mod common;

use std::time::Duration;

use common::{Running, indicator, recv, subscriber};

use jiff::SignedDuration;
use serde_json::{Value, json};
use threatbus_core::{
    Body, BusConfig, BusHandle, Message, SubscriberOptions, SubscriberReceiver, Totals, WhenFull,
};

async fn start(config: BusConfig) -> Running {
    common::start(config, None).await
}

fn sighting() -> Message {
    Message::from_json(
        json!({
            "type": "sighting", "spec_version": "2.1",
            "id": "sighting--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc",
            "created": "2020-06-23T12:34:56.000Z", "modified": "2020-06-23T12:34:56.000Z",
            "sighting_of_ref": "indicator--df0f9a0e-c3b6-4f53-b0cf-5e9c454ee0cc"
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

/// Nothing more arrives after everything published before `marker` was routed.
async fn assert_nothing_more(bus: &BusHandle, rx: &mut SubscriberReceiver) {
    let mut marker_rx = subscriber(bus, &["stix2/indicator"]).await;
    bus.publish(indicator(999_999)).await.unwrap();
    recv(&mut marker_rx).await;
    while let Some(extra) = rx.try_recv() {
        assert_eq!(
            json_of(&extra)["x_seq"],
            999_999,
            "unexpected extra message {extra:?}"
        );
    }
}

#[tokio::test]
async fn prefix_routing_delivers_by_string_prefix() {
    let r = start(BusConfig::default()).await;
    let mut ind = subscriber(&r.bus, &["stix2/ind"]).await;
    let mut both = subscriber(&r.bus, &["stix2"]).await;
    let mut sig = subscriber(&r.bus, &["stix2/sighting"]).await;
    let mut all = subscriber(&r.bus, &[""]).await;
    r.bus.publish(indicator(1)).await.unwrap();
    r.bus.publish(sighting()).await.unwrap();
    let a = recv(&mut ind).await;
    let b = recv(&mut both).await;
    assert_eq!(a.topic(), "stix2/indicator");
    assert!(a.ptr_eq(&b), "fan-out shares one message");
    assert_eq!(recv(&mut both).await.topic(), "stix2/sighting");
    assert_eq!(recv(&mut sig).await.topic(), "stix2/sighting");
    assert_eq!(recv(&mut all).await.topic(), "stix2/indicator");
    assert_eq!(recv(&mut all).await.topic(), "stix2/sighting");
    assert_nothing_more(&r.bus, &mut ind).await;
    assert_nothing_more(&r.bus, &mut sig).await;
    r.shutdown.cancel();
    r.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn overlapping_topics_deliver_once_and_unsubscribe_stops_delivery() {
    let r = start(BusConfig::default()).await;
    let mut rx = subscriber(&r.bus, &["stix2", "stix2/indicator", "stix2/indicator"]).await;
    r.bus.publish(indicator(1)).await.unwrap();
    recv(&mut rx).await;
    assert_nothing_more(&r.bus, &mut rx).await;
    r.bus
        .unsubscribe(rx.id, vec!["stix2".into()])
        .await
        .unwrap();
    r.bus.publish(sighting()).await.unwrap();
    r.bus.publish(indicator(2)).await.unwrap();
    assert_eq!(
        recv(&mut rx).await.topic(),
        "stix2/indicator",
        "still on stix2/indicator"
    );
    r.bus
        .unsubscribe(rx.id, vec!["stix2/indicator".into()])
        .await
        .unwrap();
    r.bus.publish(indicator(3)).await.unwrap();
    assert_nothing_more(&r.bus, &mut rx).await;
    r.bus.remove_subscriber(rx.id).await.unwrap();
    assert!(rx.recv().await.is_none(), "queue closes on removal");
    assert!(r.bus.remove_subscriber(rx.id).await.is_err());
    assert!(
        r.bus
            .subscribe(rx.id, vec!["x".into()], None)
            .await
            .is_err()
    );
    r.shutdown.cancel();
    r.task.await.unwrap().unwrap();
}

fn json_of(message: &Message) -> Value {
    serde_json::from_slice(message.json()).unwrap()
}

#[tokio::test]
async fn snapshot_request_reaches_listeners_but_not_the_requester_and_answers_only_the_requester() {
    let r = start(BusConfig::default()).await;
    let listener_options = |label: &str| SubscriberOptions {
        label: label.into(),
        snapshot_requests: true,
        ..Default::default()
    };
    let mut answering = r
        .bus
        .add_subscriber(listener_options("answering"))
        .await
        .unwrap();
    r.bus
        .subscribe(answering.id, vec!["stix2/indicator".into()], None)
        .await
        .unwrap();
    let mut requester = r
        .bus
        .add_subscriber(listener_options("requester"))
        .await
        .unwrap();
    let id = r
        .bus
        .subscribe(
            requester.id,
            vec!["stix2/indicator".into()],
            Some(SignedDuration::from_hours(24 * 30)),
        )
        .await
        .unwrap()
        .expect("a snapshot id");

    let request = recv(&mut answering).await;
    assert_eq!(
        json_of(&request),
        json!({"type": "snapshotrequest", "snapshot_type": 1, "snapshot_id": id, "snapshot": 2592000})
    );
    // The envelope with the answer: its body reaches the requester only.
    let body = indicator(7);
    let envelope = Message::from_json(
        json!({"type": "snapshotenvelope", "snapshot_type": 1, "snapshot_id": id, "body": json_of(&body)})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    r.bus.publish(envelope).await.unwrap();
    let answer = recv(&mut requester).await;
    assert_eq!(answer, body);
    assert!(matches!(answer.body(), Body::Indicator(_)));
    // An envelope for an id nobody asked for reaches nobody.
    let stray = Message::from_json(
        json!({"type": "snapshotenvelope", "snapshot_type": 1, "snapshot_id": "nope", "body": json_of(&body)})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    r.bus.publish(stray).await.unwrap();
    assert_nothing_more(&r.bus, &mut requester).await;
    assert_nothing_more(&r.bus, &mut answering).await;
    let totals = Totals::read(r.bus.metrics());
    assert_eq!(totals.snapshot_answers, 1);
    assert_eq!(totals.snapshot_unknown, 1);
    assert_eq!(totals.snapshot_requests, 1);
    r.shutdown.cancel();
    r.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn stix2_snapshot_asks_for_both_types_with_one_id_and_other_topics_ask_nothing() {
    let r = start(BusConfig::default()).await;
    let mut listener = r
        .bus
        .add_subscriber(SubscriberOptions {
            label: "l".into(),
            snapshot_requests: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let requester = r
        .bus
        .add_subscriber(SubscriberOptions::default())
        .await
        .unwrap();
    let days = Some(SignedDuration::from_hours(24));
    let none = r
        .bus
        .subscribe(requester.id, vec!["threatbus/x".into()], days)
        .await
        .unwrap();
    assert_eq!(none, None);
    let zero = r
        .bus
        .subscribe(
            requester.id,
            vec!["stix2".into()],
            Some(SignedDuration::ZERO),
        )
        .await
        .unwrap();
    assert_eq!(zero, None);
    let id = r
        .bus
        .subscribe(
            requester.id,
            vec!["stix2".into(), "stix2/indicator".into()],
            days,
        )
        .await
        .unwrap()
        .unwrap();
    let mut types = vec![];
    for _ in 0..2 {
        let request = json_of(&recv(&mut listener).await);
        assert_eq!(request["snapshot_id"], id.as_str());
        types.push(request["snapshot_type"].as_i64().unwrap());
    }
    types.sort();
    assert_eq!(types, [1, 2]);
    assert_nothing_more(&r.bus, &mut listener).await;
    r.shutdown.cancel();
    r.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn snapshot_ids_expire_and_die_with_their_subscriber() {
    let config = BusConfig {
        snapshot_expiry: Duration::from_secs(1),
        ..BusConfig::default()
    };
    let r = start(config).await;
    let mut listener = r
        .bus
        .add_subscriber(SubscriberOptions {
            label: "l".into(),
            snapshot_requests: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut requester = r
        .bus
        .add_subscriber(SubscriberOptions::default())
        .await
        .unwrap();
    let id = r
        .bus
        .subscribe(
            requester.id,
            vec!["stix2/sighting".into()],
            Some(SignedDuration::from_secs(60)),
        )
        .await
        .unwrap()
        .unwrap();
    recv(&mut listener).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let envelope = json!({"type": "snapshotenvelope", "snapshot_type": 2, "snapshot_id": id, "body": json_of(&sighting())});
    r.bus
        .publish(Message::from_json(envelope.to_string().as_bytes()).unwrap())
        .await
        .unwrap();
    assert_nothing_more(&r.bus, &mut requester).await;
    assert_eq!(Totals::read(r.bus.metrics()).snapshot_unknown, 1);
    r.shutdown.cancel();
    r.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn full_queue_drops_for_that_subscriber_only_and_counts() {
    let config = BusConfig {
        queue_capacity: 4,
        ..BusConfig::default()
    };
    let r = start(config).await;
    let stalled = subscriber(&r.bus, &["stix2/indicator"]).await;
    let mut reader = subscriber(&r.bus, &["stix2/indicator"]).await;
    for n in 0..50 {
        r.bus.publish(indicator(n)).await.unwrap();
        let got = recv(&mut reader).await;
        assert_eq!(json_of(&got)["x_seq"], n);
    }
    assert_eq!(stalled.len(), 4);
    assert_eq!(Totals::read(r.bus.metrics()).dropped_queue_full, 46);
    // The same in the metrics, under the app's name, and the queue depth read on demand.
    r.bus.refresh_gauges().await.unwrap();
    let text = r.bus.metrics().render();
    for line in [
        "threatbus_app_received_messages_total{app=\"probe\",kind=\"indicator\"} 50",
        "threatbus_app_sent_messages_total{app=\"probe\",kind=\"indicator\"} 54",
        "threatbus_dropped_messages_total{plugin=\"probe\",reason=\"queue_full\"} 46",
        "threatbus_backbone_sent_messages_total{backbone=\"identity\",kind=\"indicator\"} 50",
        "threatbus_backbone_received_messages_total{backbone=\"identity\",kind=\"indicator\"} 50",
        "threatbus_subscribers{app=\"probe\"} 2",
        "threatbus_subscriber_queued_messages{app=\"probe\"} 4",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }
    // The backbone never said it is connected; the app never said it is ready.
    assert_eq!(
        r.bus.metrics().not_ready(),
        ["app:probe", "backbone:identity"]
    );
    r.bus.set_ready(true);
    assert_eq!(r.bus.metrics().not_ready(), ["backbone:identity"]);
    drop(stalled);
    r.shutdown.cancel();
    r.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn block_policy_loses_nothing() {
    let config = BusConfig {
        queue_capacity: 2,
        when_full: WhenFull::Block,
        ..BusConfig::default()
    };
    let r = start(config).await;
    let mut slow = subscriber(&r.bus, &["stix2/indicator"]).await;
    let publisher = {
        let bus = r.bus.clone();
        tokio::spawn(async move {
            for n in 0..100 {
                bus.publish(indicator(n)).await.unwrap();
            }
        })
    };
    for n in 0..100 {
        if n % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(json_of(&recv(&mut slow).await)["x_seq"], n);
    }
    publisher.await.unwrap();
    assert_eq!(Totals::read(r.bus.metrics()).dropped_queue_full, 0);
    r.shutdown.cancel();
    r.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_drains_published_messages() {
    let r = start(BusConfig::default()).await;
    let mut rx = subscriber(&r.bus, &["stix2"]).await;
    for n in 0..200 {
        r.bus.publish(indicator(n)).await.unwrap();
    }
    r.shutdown.cancel();
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while let Some(m) = rx.recv().await {
            assert_eq!(json_of(&m)["x_seq"], seen);
            seen += 1;
            if seen == 200 {
                break;
            }
        }
        seen
    });
    r.task.await.unwrap().unwrap();
    assert_eq!(reader.await.unwrap(), 200);
}

/// Routes are kept up to date per subscriber (not recomputed from the whole table): after a long
/// random mix of subscribes, unsubscribes and removals, every live subscriber receives exactly
/// the messages a brute-force check of its topics says it should.
#[tokio::test]
async fn routes_follow_every_change_to_the_table() {
    let running = start(BusConfig::default()).await;
    let bus = &running.bus;
    const POOL: [&str; 9] = [
        "stix2",
        "stix2/",
        "stix2/indicator",
        "stix2/sighting",
        "stix2/indicatorx",
        "stix2/ind",
        "threatbus",
        "x",
        "",
    ];
    // A small deterministic generator (no dependency, same sequence every run).
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    let mut live: Vec<(SubscriberReceiver, std::collections::BTreeSet<&str>)> = Vec::new();
    for _ in 0..20 {
        live.push((subscriber(bus, &[]).await, Default::default()));
    }
    for round in 0..40u32 {
        for _ in 0..10 {
            let which = next(live.len());
            match next(10) {
                0..=4 => {
                    let topics: Vec<&str> =
                        (0..1 + next(3)).map(|_| POOL[next(POOL.len())]).collect();
                    let id = live[which].0.id;
                    bus.subscribe(id, topics.iter().map(|t| t.to_string()).collect(), None)
                        .await
                        .unwrap();
                    live[which].1.extend(topics);
                }
                5..=7 => {
                    let topic = POOL[next(POOL.len())];
                    let id = live[which].0.id;
                    bus.unsubscribe(id, vec![topic.to_string()]).await.unwrap();
                    live[which].1.remove(topic);
                }
                _ => {
                    let (rx, _) = live.swap_remove(which);
                    bus.remove_subscriber(rx.id).await.unwrap();
                    live.push((subscriber(bus, &[]).await, Default::default()));
                }
            }
        }
        bus.publish(indicator(round)).await.unwrap();
        bus.publish(sighting()).await.unwrap();
        // A marker subscriber: once it has both, everything before was routed.
        let mut marker = subscriber(bus, &["stix2"]).await;
        bus.publish(indicator(1_000_000 + round)).await.unwrap();
        recv(&mut marker).await;
        bus.remove_subscriber(marker.id).await.unwrap();
        for (rx, topics) in &mut live {
            let wants_indicator = topics.iter().any(|t| "stix2/indicator".starts_with(t));
            let wants_sighting = topics.iter().any(|t| "stix2/sighting".starts_with(t));
            let mut got_indicator = false;
            let mut got_sighting = false;
            while let Some(message) = rx.try_recv() {
                match message.body() {
                    Body::Indicator(_) if json_of(&message)["x_seq"] == round => {
                        got_indicator = true
                    }
                    Body::Indicator(_) => {}
                    Body::Sighting(_) => got_sighting = true,
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(
                (got_indicator, got_sighting),
                (wants_indicator, wants_sighting),
                "round {round}, topics {topics:?}"
            );
        }
    }
    running.shutdown.cancel();
    let _ = running.task.await;
}

/// While nobody listens to a subscriber, nothing is queued for it; once someone does, new
/// messages arrive again.
#[tokio::test]
async fn nothing_is_queued_for_a_subscriber_nobody_listens_to() {
    let running = start(BusConfig::default()).await;
    let bus = &running.bus;
    let mut idle = subscriber(bus, &["stix2"]).await;
    let mut other = subscriber(bus, &["stix2/indicator"]).await;
    bus.set_listening(idle.id, false).await.unwrap();
    for n in 0..100 {
        bus.publish(indicator(n)).await.unwrap();
    }
    bus.publish(sighting()).await.unwrap();
    for _ in 0..100 {
        recv(&mut other).await;
    }
    assert_nothing_more(bus, &mut idle).await;
    assert!(idle.is_empty());
    bus.set_listening(idle.id, true).await.unwrap();
    bus.publish(indicator(500)).await.unwrap();
    assert_eq!(json_of(&recv(&mut idle).await)["x_seq"], 500);
    assert!(
        bus.set_listening(threatbus_core::SubscriberId(999_999), false)
            .await
            .is_err()
    );
    running.shutdown.cancel();
    let _ = running.task.await;
}
