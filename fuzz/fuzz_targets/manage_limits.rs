//! Fuzzes the ZeroMQ app's management decoder with its limits, on inputs far above them
//! (run with `-max_len=200000`): nothing may panic; a request above `max_request_size` is
//! refused naming that limit before anything is parsed; a subscription that gets through holds
//! no more topics, and no longer ones, than the limits allow; every reply is a JSON object with
//! a `status`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use threatbus_zmq::manage::{self, Limits, Refusal, Request};

const LIMITS: Limits = Limits {
    max_request_size: 4096,
    max_topic_length: 64,
    max_topics_per_request: 8,
};

fuzz_target!(|data: &[u8]| {
    match manage::decode_within(data, &LIMITS) {
        Ok(Request::Subscribe { topics, .. }) => {
            assert!(data.len() <= LIMITS.max_request_size);
            assert!(topics.len() <= LIMITS.max_topics_per_request);
            assert!(topics.iter().all(|t| t.len() <= LIMITS.max_topic_length));
        }
        Ok(_) => assert!(data.len() <= LIMITS.max_request_size),
        Err(refusal) => {
            if data.len() > LIMITS.max_request_size {
                assert!(matches!(&refusal, Refusal::WithReason(r) if r.contains("max_request_size")));
            }
            let reply: serde_json::Value =
                serde_json::from_str(&refusal.to_json()).expect("replies are JSON");
            assert!(reply["status"].is_string());
        }
    }
});
