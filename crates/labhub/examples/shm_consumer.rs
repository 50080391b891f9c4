//! A shared-memory consumer that finds its channel through the hub.
//!
//! ```text
//! cargo run --example shm_consumer -- cam0
//! ```
//!
//! It checks the segment against what the broker announces before reading, reports itself to
//! the broker as a consumer, prints the broker's notices about the channel (`channel_down`
//! when the producer dies, `channel_up` when it is back), and keeps reading across producer
//! restarts and broker restarts.

use std::time::Duration;

use labhub::client::{ClientConfig, ConsumeError, Hub};
use labhub::shm::AttachOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "cam0".into());

    // A Hub can also be used without the lifecycle; dropping it unregisters and closes.
    let hub = Hub::connect(ClientConfig::from_env()?)?;
    let mut consumer = hub.find_shm_consumer(&name, AttachOptions::default())?;
    println!("reading {name} ({:?})", consumer.info().spec.policy);

    loop {
        // The frame is read in place; the closure copies what it needs, and the result is
        // returned only if the frame proved whole (not overwritten meanwhile).
        match consumer.read(Some(Duration::from_secs(1)), |frame| {
            (
                frame.frame_id(),
                String::from_utf8_lossy(frame.data()).into_owned(),
            )
        }) {
            Ok((id, text)) => println!("{id}: {text}"),
            Err(ConsumeError::Timeout { .. }) => println!("(no frame for a second)"),
            Err(e) => println!("error: {e}"),
        }
        while let Some(notice) = consumer.try_notice() {
            println!("notice: {}", notice.kind());
        }
    }
}
