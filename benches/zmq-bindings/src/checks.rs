//! Functional checks relevant to the bus: interop of the `zeromq` crate with libzmq peers
//! (the library pyzmq and the bus's apps use), IPv6, REQ/REP, and what an oversized frame
//! announced by a peer does to each side (libzmq has ZMQ_MAXMSGSIZE; `zeromq` has no limit).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use zeromq::{PubSocket, RepSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

use crate::common::{self, Frame, Tally};
use crate::libzmq::set_nodrop;

const FRAMES: u64 = 50_000;
const SIZE: usize = 500;
const IDLE: Duration = Duration::from_secs(2);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A libzmq PUB that probes `topics` until `ready`, then sends FRAMES data frames to each.
fn libzmq_publisher(socket: zmq::Socket, topics: Vec<String>, ready: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.load(Ordering::Acquire) && Instant::now() < deadline {
            for t in &topics {
                socket.send(common::probe_frame(t), 0).unwrap();
            }
            thread::sleep(Duration::from_millis(5));
        }
        let mut templates: Vec<Vec<u8>> = topics.iter().map(|t| common::data_template(t, SIZE)).collect();
        for seq in 0..FRAMES {
            for frame in &mut templates {
                common::set_seq(frame, seq);
                socket.send(&frame[..], 0).unwrap();
            }
        }
        thread::sleep(Duration::from_millis(200));
    })
}

async fn zeromq_subscriber_count(mut socket: SubSocket, topic: &str, ready: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tally.received < FRAMES && Instant::now() < deadline {
        match tokio::time::timeout(IDLE, socket.recv()).await {
            Ok(Ok(m)) => {
                if let Frame::Probe = tally.observe(topic.as_bytes(), m.get(0).unwrap()) {
                    ready.store(true, Ordering::Release);
                }
            }
            Ok(Err(e)) => panic!("recv: {e}"),
            Err(_) if ready.load(Ordering::Acquire) => break,
            Err(_) => {}
        }
    }
    tally
}

fn verdict(tally: &Tally) -> String {
    let ok = tally.received == FRAMES && tally.wrong_topic == 0 && tally.out_of_order == 0;
    format!(
        "{}: received {}/{} (other-topic frames seen: {}, out of order: {})",
        if ok { "OK" } else { "FAIL" },
        tally.received,
        FRAMES,
        tally.wrong_topic,
        tally.out_of_order
    )
}

/// libzmq PUB binds (like the bus), `zeromq` SUB connects; the PUB also sends a topic the SUB
/// did not subscribe to, which must not arrive.
fn libzmq_pub_to_zeromq_sub(host: &str) -> String {
    let context = zmq::Context::new();
    let mut publisher = context.socket(zmq::PUB).unwrap();
    publisher.set_ipv6(host.contains(':')).unwrap();
    publisher.set_sndhwm(1_000_000).unwrap();
    set_nodrop(&mut publisher).unwrap();
    publisher.bind(&format!("tcp://{host}:0")).unwrap();
    let endpoint = publisher.get_last_endpoint().unwrap().unwrap();
    let ready = Arc::new(AtomicBool::new(false));
    let (wanted, other) = (common::topic(0), common::topic(1));
    let sender = libzmq_publisher(publisher, vec![wanted.clone(), other], ready.clone());
    let tally = runtime().block_on(async {
        let mut socket = SubSocket::new();
        socket.subscribe(&wanted).await.unwrap();
        socket.connect(&endpoint).await.unwrap();
        zeromq_subscriber_count(socket, &wanted, &ready).await
    });
    sender.join().unwrap();
    verdict(&tally)
}

/// `zeromq` SUB binds (like the bus's SUB socket), a libzmq PUB (an app) connects.
fn libzmq_pub_connects_to_zeromq_sub() -> String {
    let rt = runtime();
    let wanted = common::topic(0);
    let (socket, endpoint) = rt.block_on(async {
        let mut socket = SubSocket::new();
        let endpoint = socket.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
        socket.subscribe(&wanted).await.unwrap();
        (socket, endpoint)
    });
    let context = zmq::Context::new();
    let mut publisher = context.socket(zmq::PUB).unwrap();
    publisher.set_sndhwm(1_000_000).unwrap();
    set_nodrop(&mut publisher).unwrap();
    publisher.connect(&endpoint).unwrap();
    let ready = Arc::new(AtomicBool::new(false));
    let sender = libzmq_publisher(publisher, vec![wanted.clone(), common::topic(1)], ready.clone());
    let tally = rt.block_on(zeromq_subscriber_count(socket, &wanted, &ready));
    sender.join().unwrap();
    verdict(&tally)
}

/// `zeromq` PUB binds, libzmq SUB connects.
fn zeromq_pub_to_libzmq_sub(host: &str) -> String {
    let rt = runtime();
    let wanted = common::topic(0);
    let ready = Arc::new(AtomicBool::new(false));
    let (publisher, endpoint) = rt.block_on(async {
        let mut publisher = PubSocket::new();
        let endpoint = publisher.bind(&format!("tcp://{host}:0")).await.unwrap().to_string();
        (publisher, endpoint)
    });
    let context = zmq::Context::new();
    let subscriber = context.socket(zmq::SUB).unwrap();
    subscriber.set_ipv6(host.contains(':')).unwrap();
    subscriber.set_rcvhwm(1_000_000).unwrap();
    subscriber.set_rcvtimeo(IDLE.as_millis() as i32).unwrap();
    subscriber.set_subscribe(wanted.as_bytes()).unwrap();
    subscriber.connect(&endpoint).unwrap();
    let receiver = {
        let (ready, wanted) = (ready.clone(), wanted.clone());
        thread::spawn(move || {
            let mut tally = Tally::default();
            let mut message = zmq::Message::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while tally.received < FRAMES && Instant::now() < deadline {
                match subscriber.recv(&mut message, 0) {
                    Ok(()) => {
                        if let Frame::Probe = tally.observe(wanted.as_bytes(), &message) {
                            ready.store(true, Ordering::Release);
                        }
                    }
                    Err(zmq::Error::EAGAIN) if ready.load(Ordering::Acquire) => break,
                    Err(_) => {}
                }
            }
            tally
        })
    };
    rt.block_on(async move {
        let mut publisher = publisher;
        let topics = [wanted.clone(), common::topic(1)];
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.load(Ordering::Acquire) && Instant::now() < deadline {
            for t in &topics {
                publisher.send(ZmqMessage::from(common::probe_frame(t))).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut templates: Vec<Vec<u8>> = topics.iter().map(|t| common::data_template(t, SIZE)).collect();
        for seq in 0..FRAMES {
            for frame in &mut templates {
                common::set_seq(frame, seq);
                publisher.send(ZmqMessage::from(frame.clone())).await.unwrap();
            }
            // 2 x 50k frames fit the crate's 100k queue, but pace a little anyway so this
            // checks interop, not the drop policy.
            if seq % 1000 == 999 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(publisher);
    });
    verdict(&receiver.join().unwrap())
}

/// libzmq REQ (an app) against a `zeromq` REP (the bus's manage socket).
fn libzmq_req_to_zeromq_rep() -> String {
    let rt = runtime();
    let (mut rep, endpoint) = rt.block_on(async {
        let mut rep = RepSocket::new();
        let endpoint = rep.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
        (rep, endpoint)
    });
    let server = rt.spawn(async move {
        for _ in 0..1000 {
            let request = rep.recv().await.unwrap();
            let mut reply = request.get(0).unwrap().to_vec();
            reply.reverse();
            rep.send(ZmqMessage::from(reply)).await.unwrap();
        }
        rep
    });
    let context = zmq::Context::new();
    let req = context.socket(zmq::REQ).unwrap();
    req.set_rcvtimeo(2000).unwrap();
    req.connect(&endpoint).unwrap();
    let mut good = 0;
    for i in 0..1000 {
        let request = format!("{{\"action\":\"heartbeat\",\"n\":{i}}}");
        req.send(request.as_bytes(), 0).unwrap();
        match req.recv_bytes(0) {
            Ok(reply) if reply.iter().rev().copied().eq(request.bytes()) => good += 1,
            _ => break,
        }
    }
    let _rep = rt.block_on(server);
    format!("{}: {good}/1000 round trips", if good == 1000 { "OK" } else { "FAIL" })
}

pub fn interop() {
    println!("Interop checks (zeromq crate <-> libzmq 4.3.4 via the zmq crate; {FRAMES} frames of {SIZE} B):");
    let checks: [(&str, fn() -> String); 6] = [
        ("libzmq PUB (bind) -> zeromq SUB (connect), topic filter", || libzmq_pub_to_zeromq_sub("127.0.0.1")),
        ("libzmq PUB (bind [::1]) -> zeromq SUB (connect), IPv6", || libzmq_pub_to_zeromq_sub("[::1]")),
        ("zeromq PUB (bind) -> libzmq SUB (connect)", || zeromq_pub_to_libzmq_sub("127.0.0.1")),
        ("zeromq PUB (bind [::1]) -> libzmq SUB (connect), IPv6", || zeromq_pub_to_libzmq_sub("[::1]")),
        ("libzmq PUB (connect) -> zeromq SUB (bind)", libzmq_pub_connects_to_zeromq_sub),
        ("libzmq REQ -> zeromq REP (bind)", libzmq_req_to_zeromq_rep),
    ];
    for (name, check) in checks {
        let outcome = std::panic::catch_unwind(check).unwrap_or_else(|_| "FAIL: panicked".to_string());
        println!("  {name:<58} {outcome}");
    }
}

/// Current resident set of this process, KiB.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Child mode: a raw TCP peer does the ZMTP 3.0 handshake as a SUB with a PUB socket of
/// `binding`, then announces one frame of `claim` bytes and streams `stream` bytes of it.
/// libzmq's PUB has ZMQ_MAXMSGSIZE = 1 MiB (as the bus sets on its sockets); the `zeromq` PUB
/// has nothing to set. Prints what happened; an abort of this process is reported by the parent.
pub fn oversize(binding: &str, claim: u64, stream: u64) {
    let rt = runtime();
    let context = zmq::Context::new();
    let (_keep_zmq, _keep_zeromq, endpoint) = match binding {
        "zmq" => {
            let socket = context.socket(zmq::PUB).unwrap();
            socket.set_maxmsgsize(1 << 20).unwrap();
            socket.bind("tcp://127.0.0.1:0").unwrap();
            let endpoint = socket.get_last_endpoint().unwrap().unwrap();
            (Some(socket), None, endpoint)
        }
        _ => {
            let (socket, endpoint) = rt.block_on(async {
                let mut socket = PubSocket::new();
                let endpoint = socket.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
                (socket, endpoint)
            });
            (None, Some(socket), endpoint)
        }
    };
    let address = endpoint.trim_start_matches("tcp://");
    let rss_before = vm_rss_kib();
    let mut peer = TcpStream::connect(address).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // Greeting: signature, version 3.0, mechanism NULL, as-server 0, filler.
    let mut greeting = [0u8; 64];
    greeting[0] = 0xff;
    greeting[9] = 0x7f;
    greeting[10] = 3;
    greeting[12..16].copy_from_slice(b"NULL");
    peer.write_all(&greeting).unwrap();
    let mut theirs = [0u8; 64];
    peer.read_exact(&mut theirs).unwrap();
    // READY command with Socket-Type=SUB.
    let mut body = vec![5u8];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&3u32.to_be_bytes());
    body.extend_from_slice(b"SUB");
    let mut command = vec![0x04, body.len() as u8];
    command.extend_from_slice(&body);
    peer.write_all(&command).unwrap();
    // One long message frame announced as `claim` bytes (a subscription, first byte 1).
    let mut header = vec![0x02];
    header.extend_from_slice(&claim.to_be_bytes());
    header.push(1);
    peer.write_all(&header).unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0u64;
    let started = Instant::now();
    let mut closed = None;
    while sent < stream {
        match peer.write(&chunk[..chunk.len().min((stream - sent) as usize)]) {
            Ok(0) => {
                closed = Some("peer closed the connection".to_string());
                break;
            }
            Ok(n) => sent += n as u64,
            Err(e) => {
                closed = Some(format!("connection closed by the PUB side ({})", e.kind()));
                break;
            }
        }
    }
    thread::sleep(Duration::from_millis(500));
    println!(
        "OVERSIZE binding={binding} claim={claim} streamed={sent} in {:.1}s; {}; VmRSS grew by {} MiB",
        started.elapsed().as_secs_f64(),
        closed.unwrap_or_else(|| "connection still open, socket kept reading".to_string()),
        vm_rss_kib().saturating_sub(rss_before) / 1024
    );
}
