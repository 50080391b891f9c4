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

use clap::Parser;
use labhub::client::{ClientConfig, ConsumeError, Hub};

/// Print the frames of a shared-memory channel found through the hub.
#[derive(Debug, Parser)]
struct Args {
    /// The channel name.
    #[arg(default_value = "cam0")]
    channel: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // A Hub can also be used without the lifecycle; dropping it unregisters and closes.
    let hub = Hub::connect(ClientConfig::from_env()?)?;
    // Byte frames (`u8`, one dimension), of whatever size the producer chose.
    let mut consumer = hub.channel(&args.channel).element::<u8>().open()?;
    println!(
        "reading {} ({:?})",
        args.channel,
        consumer.info().and_then(|i| i.spec.policy.clone())
    );

    loop {
        // A checked copy: whole under every policy (a frame a lossy producer rewrote while it
        // was copied is an error, never torn bytes).
        match consumer.next_copy(Some(Duration::from_secs(1))) {
            Ok(frame) => println!(
                "{}: {}",
                frame.frame_id,
                String::from_utf8_lossy(&frame.data)
            ),
            Err(ConsumeError::Timeout { .. }) => println!("(no frame for a second)"),
            Err(e) => println!("error: {e}"),
        }
        while let Some(notice) = consumer.try_notice() {
            println!("notice: {}", notice.kind());
        }
    }
}
