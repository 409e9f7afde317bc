//! libzmq through the `zmq` crate: blocking API, one OS thread per socket.
//!
//! Like the bus: the PUB socket binds and has `ZMQ_XPUB_NODROP` set, so a full subscriber
//! pipe (SNDHWM) makes `send` wait instead of dropping; the SUB sockets connect.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{self, Frame, Options, RunResult, Tally};

pub use threatbus_zmq_client::set_nodrop;

pub fn run(opts: &Options) -> RunResult {
    let context = zmq::Context::new();
    let mut publisher = context.socket(zmq::PUB).expect("PUB socket");
    publisher.set_linger(0).unwrap();
    publisher.set_sndhwm(opts.hwm).unwrap();
    set_nodrop(&mut publisher).unwrap();
    publisher.bind("tcp://127.0.0.1:0").unwrap();
    let endpoint = publisher.get_last_endpoint().unwrap().unwrap();

    let ready: Arc<Vec<AtomicBool>> = Arc::new((0..opts.subs).map(|_| AtomicBool::new(false)).collect());
    let pub_done = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(300);

    let subscribers: Vec<_> = (0..opts.subs)
        .map(|k| {
            let socket = context.socket(zmq::SUB).expect("SUB socket");
            socket.set_linger(0).unwrap();
            socket.set_rcvhwm(opts.hwm).unwrap();
            socket.set_rcvtimeo(opts.idle.as_millis() as i32).unwrap();
            let topic = common::topic(k);
            socket.set_subscribe(topic.as_bytes()).unwrap();
            socket.connect(&endpoint).unwrap();
            let (ready, pub_done, frames) = (ready.clone(), pub_done.clone(), opts.frames);
            thread::Builder::new()
                .name(format!("sub-{k}"))
                .spawn(move || {
                    let mut tally = Tally::default();
                    let mut message = zmq::Message::new();
                    while tally.received < frames && Instant::now() < deadline {
                        match socket.recv(&mut message, 0) {
                            Ok(()) => {
                                if let Frame::Probe = tally.observe(topic.as_bytes(), &message) {
                                    ready[k].store(true, Ordering::Release);
                                }
                            }
                            Err(zmq::Error::EAGAIN) if pub_done.load(Ordering::Acquire) => break,
                            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {}
                            Err(e) => panic!("recv: {e}"),
                        }
                    }
                    tally
                })
                .unwrap()
        })
        .collect();

    let publisher_thread = {
        let (ready, pub_done, opts) = (ready.clone(), pub_done.clone(), opts.clone());
        thread::Builder::new()
            .name("pub".into())
            .spawn(move || {
                let topics: Vec<String> = (0..opts.subs).map(common::topic).collect();
                // Slow joiner: probe every topic until each subscriber has seen one.
                let warmup_start = Instant::now();
                while !ready.iter().all(|r| r.load(Ordering::Acquire)) {
                    for topic in &topics {
                        publisher.send(common::probe_frame(topic), 0).unwrap();
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                let warmup = warmup_start.elapsed();
                let mut templates: Vec<Vec<u8>> =
                    topics.iter().map(|t| common::data_template(t, opts.size)).collect();
                let (cpu_before, _) = common::rusage();
                let start = Instant::now();
                for seq in 0..opts.frames {
                    for frame in &mut templates {
                        common::set_seq(frame, seq);
                        publisher.send(&frame[..], 0).unwrap();
                    }
                }
                let done = Instant::now();
                pub_done.store(true, Ordering::Release);
                (start, done, cpu_before, warmup, publisher)
            })
            .unwrap()
    };

    let (start, done, cpu_before, warmup, _publisher) = publisher_thread.join().unwrap();
    let tallies: Vec<Tally> = subscribers.into_iter().map(|s| s.join().unwrap()).collect();
    RunResult::from_tallies("zmq", opts, start, done, &tallies, cpu_before, warmup)
}
