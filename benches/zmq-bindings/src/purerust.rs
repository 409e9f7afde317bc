//! The pure-Rust `zeromq` crate on a tokio multi-thread runtime: one task per socket.
//!
//! The crate's PUB socket has no high-water-mark or no-drop option: `send` puts the frame
//! on a fixed internal queue and returns at once, and frames are silently dropped when that
//! queue (or a subscriber's queue) is full. So there are two variants:
//!
//! * `zeromq`: the publisher sends as fast as `send` returns (what a straight port of the
//!   bus's publisher would do); loss is measured and reported.
//! * `zeromq-window`: back-pressure done by the application, in process: the publisher
//!   takes a permit per frame from a per-subscriber semaphore of `window` permits and the
//!   subscriber gives permits back as frames arrive. This shows the crate's lossless
//!   throughput; a real bus could not do this, since its subscribers are other processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::sync::Semaphore;
use zeromq::{PubSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

use crate::common::{self, Frame, Options, RunResult, Tally};

/// Permits a subscriber gives back at once.
const RETURN_BATCH: usize = 256;

pub fn run(opts: &Options, windowed: bool) -> RunResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(run_async(opts, windowed));
    // Tasks of the crate may still hold sockets; do not wait for them.
    runtime.shutdown_background();
    result
}

async fn run_async(opts: &Options, windowed: bool) -> RunResult {
    let name = if windowed { "zeromq-window" } else { "zeromq" };
    let mut publisher = PubSocket::new();
    let endpoint = publisher.bind("tcp://127.0.0.1:0").await.unwrap().to_string();

    let ready: Arc<Vec<AtomicBool>> = Arc::new((0..opts.subs).map(|_| AtomicBool::new(false)).collect());
    let pub_done = Arc::new(AtomicBool::new(false));
    let windows: Vec<Arc<Semaphore>> = (0..opts.subs).map(|_| Arc::new(Semaphore::new(opts.window))).collect();
    let deadline = Instant::now() + Duration::from_secs(300);

    let mut subscribers = Vec::new();
    for k in 0..opts.subs {
        let mut socket = SubSocket::new();
        let topic = common::topic(k);
        socket.subscribe(&topic).await.unwrap();
        socket.connect(&endpoint).await.unwrap();
        let (ready, pub_done, window) = (ready.clone(), pub_done.clone(), windows[k].clone());
        let (frames, idle) = (opts.frames, opts.idle);
        subscribers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut unreturned = 0;
            while tally.received < frames && Instant::now() < deadline {
                match tokio::time::timeout(idle, socket.recv()).await {
                    Ok(Ok(message)) => {
                        let frame = message.get(0).expect("one frame");
                        match tally.observe(topic.as_bytes(), frame) {
                            Frame::Probe => ready[k].store(true, Ordering::Release),
                            Frame::Data if windowed => {
                                unreturned += 1;
                                if unreturned == RETURN_BATCH {
                                    window.add_permits(unreturned);
                                    unreturned = 0;
                                }
                            }
                            Frame::Data => {}
                        }
                    }
                    Ok(Err(e)) => panic!("recv: {e}"),
                    Err(_) if pub_done.load(Ordering::Acquire) => break,
                    Err(_) => {}
                }
            }
            tally
        }));
    }

    let publisher_task = {
        let (ready, pub_done, opts) = (ready.clone(), pub_done.clone(), opts.clone());
        tokio::spawn(async move {
            let topics: Vec<String> = (0..opts.subs).map(common::topic).collect();
            let warmup_start = Instant::now();
            while !ready.iter().all(|r| r.load(Ordering::Acquire)) {
                for topic in &topics {
                    publisher.send(ZmqMessage::from(common::probe_frame(topic))).await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let warmup = warmup_start.elapsed();
            let mut templates: Vec<Vec<u8>> =
                topics.iter().map(|t| common::data_template(t, opts.size)).collect();
            let (cpu_before, _) = common::rusage();
            let start = Instant::now();
            'send: for seq in 0..opts.frames {
                for (k, template) in templates.iter_mut().enumerate() {
                    if windowed {
                        let permit = match windows[k].try_acquire() {
                            Ok(permit) => permit,
                            Err(_) => match tokio::time::timeout(opts.idle, windows[k].acquire()).await {
                                Ok(permit) => permit.unwrap(),
                                // Frames were lost, so permits will not come back.
                                Err(_) => break 'send,
                            },
                        };
                        permit.forget();
                    }
                    common::set_seq(template, seq);
                    let mut frame = BytesMut::with_capacity(template.len());
                    frame.put_slice(template);
                    publisher.send(ZmqMessage::from(frame.freeze())).await.unwrap();
                }
            }
            let done = Instant::now();
            pub_done.store(true, Ordering::Release);
            (start, done, cpu_before, warmup, publisher)
        })
    };

    let (start, done, cpu_before, warmup, _publisher) = publisher_task.await.unwrap();
    let mut tallies = Vec::new();
    for subscriber in subscribers {
        tallies.push(subscriber.await.unwrap());
    }
    RunResult::from_tallies(name, opts, start, done, &tallies, cpu_before, warmup)
}
