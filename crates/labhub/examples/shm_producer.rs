//! A shared-memory producer registered with the hub.
//!
//! Start a broker (`labhub hub`), then this, then `shm_consumer` (several if you like):
//!
//! ```text
//! cargo run --example shm_producer -- cam0
//! cargo run --example shm_consumer -- cam0
//! ```
//!
//! Ctrl-C or SIGTERM stops it cleanly: it unregisters the channel and exits. Kill it with
//! `kill -9` and start it again: it takes the same segment over, frame ids continue, and the
//! consumers resume by themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use labhub::client::{self, ClientConfig};
use labhub::lifecycle::LifecycleGuard;
use labhub::log::{self, LogConfig, Sink};
use labhub::shm::Policy;

/// Publish a text frame every 100 ms on a shared-memory channel registered with the hub.
#[derive(Debug, Parser)]
struct Args {
    /// The channel name.
    #[arg(default_value = "cam0")]
    channel: String,
    /// The channel's policy: latest, double, ring:8:block, ring:8:fail, ring:8:drop.
    #[arg(long, default_value = "double")]
    policy: Policy,
    /// Largest frame, in bytes.
    #[arg(long, default_value_t = 1024)]
    frame_size: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // SIGINT and SIGTERM end the loop below, so the guard's drop unregisters the channel.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }

    // Logging and the hub client are lifecycle modules: the client starts after the logger
    // and stops (unregistering its channels) before it, when the guard is dropped.
    let config = ClientConfig::from_env()?; // keys and endpoints from the labhub home
    let _guard = LifecycleGuard::new([
        log::module(LogConfig::new(Sink::Console)),
        client::module(config),
    ])?;
    let hub = client::hub().ok_or("the hub client did not start")?;

    let mut producer = hub
        .channel(&args.channel)
        .policy(args.policy)
        .bytes(args.frame_size)
        .schema("labhub.example.text", 1)
        .create()?;
    println!(
        "producing on {} ({}), from frame {}",
        args.channel,
        args.policy,
        producer.next_frame_id()
    );

    while !stop.load(Ordering::Relaxed) {
        // Fill a slot in place, exactly as long as the frame: no copy between this process
        // and the consumers.
        let id = producer.next_frame_id();
        let text = format!("frame {id} from pid {}", std::process::id());
        let len = (text.len() as u64).min(args.frame_size);
        let mut slot = producer.loan_shape(&[len])?;
        slot.copy_from_slice(&text.as_bytes()[..len as usize]);
        slot.commit();

        // The broker tells producers about consumers it dropped (they went silent).
        while let Some(notice) = producer.try_notice() {
            println!("notice: {notice:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopping: the channel is unregistered");
    Ok(())
}
