//! A shared-memory producer registered with the hub.
//!
//! Start a broker (`labhub hub`), then this, then `shm_consumer` (several if you like):
//!
//! ```text
//! cargo run --example shm_producer -- cam0
//! cargo run --example shm_consumer -- cam0
//! ```
//!
//! Kill it (Ctrl-C, even `kill -9`) and start it again: it re-attaches to the same segment,
//! frame ids continue, and the consumers resume by themselves.

use std::time::Duration;

use labhub::client::{self, ClientConfig};
use labhub::lifecycle::LifecycleGuard;
use labhub::log::{self, LogConfig, Sink};
use labhub::shm::{ChannelConfig, FrameMeta, Policy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "cam0".into());

    // Logging and the hub client are lifecycle modules: the client starts after the logger
    // and stops (unregistering its channels) before it, when the guard is dropped.
    let config = ClientConfig::from_env()?; // keys and endpoints from the labhub home
    let _guard = LifecycleGuard::new([
        log::module(LogConfig::new(Sink::Console)),
        client::module(config),
    ])?;
    let hub = client::hub().ok_or("the hub client did not start")?;

    // Two slots: the newest frame wins, the producer never waits for slow readers.
    let mut producer =
        hub.create_shm_producer(&name, ChannelConfig::new(Policy::DoubleBuffer, 1024))?;
    println!(
        "producing on {name}, from frame {}",
        producer.next_frame_id()
    );

    loop {
        // Fill the slot in place: no copy between this process and the consumers.
        let mut slot = producer.begin_publish()?;
        let text = format!("frame {} from pid {}", slot.frame_id(), std::process::id());
        slot.data_mut()[..text.len()].copy_from_slice(text.as_bytes());
        slot.set_len(text.len())?;
        slot.set_meta(&FrameMeta::new(0x7e57, &[text.len() as u64])?);
        slot.publish()?;

        // The broker tells producers about consumers it dropped (they went silent).
        while let Some(notice) = producer.try_notice() {
            println!("notice: {notice:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
