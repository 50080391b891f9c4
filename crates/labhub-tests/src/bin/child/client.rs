//! Child roles of the Hub client's end-to-end tests: a broker, a producer and a consumer, each
//! reporting on stdout, one line per event, so the test can synchronise on them.
//!
//! - `client-broker HOME ENDPOINT NOTIFY`: a broker (heartbeat 100 ms, 3 misses); prints
//!   `ready`, then serves until killed.
//! - `client-producer HOME ENDPOINT NOTIFY NAME`: creates and registers shm channel NAME, prints
//!   `ready <next frame id>`, then publishes a frame (its id, little-endian) every 10 ms.
//! - `client-consumer HOME ENDPOINT NOTIFY NAME`: finds channel NAME (retrying while it is not
//!   registered yet), prints `attached`, then `frame <id>` per frame, `timeout consumers=<n>`
//!   per read that found no frame within 200 ms (n: the consumers its segment holds), and
//!   `notice <kind>` per notice.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use labhub::broker::BrokerConfig;
use labhub::client::{ClientConfig, ClientError, ConsumeError, Hub};
use labhub::shm::{Backpressure, Policy};

pub fn run(role: &str, args: &[String]) -> anyhow::Result<()> {
    match (role, args) {
        ("client-broker", [home, endpoint, notify]) => broker(home, endpoint, notify),
        ("client-producer", [home, endpoint, notify, name]) => {
            producer(home, endpoint, notify, name)
        }
        ("client-consumer", [home, endpoint, notify, name]) => {
            consumer(home, endpoint, notify, name)
        }
        _ => bail!("bad client role {role:?} {args:?}"),
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn broker(home: &str, endpoint: &str, notify: &str) -> anyhow::Result<()> {
    let mut config = BrokerConfig::for_home(home);
    config.endpoint = endpoint.into();
    config.notify_endpoint = notify.into();
    config.registry.heartbeat_interval = Duration::from_millis(100);
    config.registry.max_missed_heartbeats = 3;
    config.reap_stale_segments = false;
    let stop = AtomicBool::new(false);
    labhub::broker::run(config, &stop, |_| say("ready"))?;
    Ok(())
}

pub(crate) fn connect(home: &str, endpoint: &str, notify: &str) -> anyhow::Result<Hub> {
    let mut config = ClientConfig::from_home(Path::new(home))?
        .notify_endpoint(notify)
        .request_timeout(Duration::from_secs(2));
    config.endpoint = endpoint.into();
    Ok(Hub::connect(config)?)
}

fn producer(home: &str, endpoint: &str, notify: &str, name: &str) -> anyhow::Result<()> {
    let hub = connect(home, endpoint, notify)?;
    let mut producer = hub
        .channel(name)
        .policy(Policy::Ring {
            slots: 64,
            when_full: Backpressure::DropOldest,
        })
        .bytes(64)
        .create()
        .context("creating the producer")?;
    say(&format!("ready {}", producer.next_frame_id()));
    loop {
        let id = producer.next_frame_id();
        producer.publish(&id.to_le_bytes(), &[8])?;
        while let Some(n) = producer.try_notice() {
            say(&format!("notice {}", n.kind()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn consumer(home: &str, endpoint: &str, notify: &str, name: &str) -> anyhow::Result<()> {
    let hub = connect(home, endpoint, notify)?;
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut consumer = loop {
        match hub.channel(name).element::<u8>().open() {
            Ok(c) => break c,
            Err(e @ ClientError::Refused { .. }) if Instant::now() < give_up => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    };
    say("attached");
    loop {
        match consumer
            .next(Some(Duration::from_millis(200)))
            .map(|f| f.frame_id())
        {
            Ok(id) => say(&format!("frame {id}")),
            Err(ConsumeError::Timeout { .. }) => say(&format!(
                "timeout consumers={}",
                consumer.consumer().stats().consumers
            )),
            Err(e) => say(&format!("error {e}")),
        }
        while let Some(n) = consumer.try_notice() {
            say(&format!("notice {}", n.kind()));
        }
    }
}
