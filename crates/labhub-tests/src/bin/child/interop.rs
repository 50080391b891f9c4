//! `interop-*` roles: the Rust side of the Python package's interop tests. Frames carry a
//! pattern both sides compute: byte `i` of frame `k` is `(k + i) mod 251`.

use std::time::Duration;

use anyhow::{Context, bail};
use labhub::shm::{Channel, ElementType, Policy};

fn fill(buf: &mut [u8], k: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = ((k + i as u64) % 251) as u8;
    }
}

fn args(role: &str, args: &[String]) -> anyhow::Result<(String, ElementType, Vec<u64>, u64)> {
    let [name, element, dims, frames] = args else {
        bail!("{role} NAME ELEMENT DIMS(a,b,..) FRAMES");
    };
    let dims = dims
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<u64>, _>>()
        .context("DIMS")?;
    Ok((name.clone(), element.parse()?, dims, frames.parse()?))
}

/// Dispatches `interop-*` roles.
pub fn run(role: &str, rest: &[String]) -> anyhow::Result<()> {
    let (name, element, dims, frames) = args(role, rest)?;
    match role {
        // interop-bench-produce NAME u8 BYTES FRAMES: the Rust baseline of the Python
        // benchmark (python/bench): a ring:8:block channel of BYTES-byte frames; prints
        // "created", waits for a line on stdin, then fills and commits FRAMES frames.
        "interop-bench-produce" => {
            let mut p = Channel::new(&name)
                .policy(Policy::ring(8))
                .dynamic(element, &dims)
                .create()?;
            println!("created");
            let mut go = String::new();
            std::io::stdin().read_line(&mut go)?;
            for _ in 0..frames {
                let mut slot = p.loan()?;
                let k = slot.frame_id() as u8;
                slot.fill(k);
                slot.commit();
            }
            Ok(())
        }
        // interop-bench-consume NAME u8 BYTES FRAMES: reads FRAMES frames touching the first
        // and last byte of each; prints "attached", then "rate F" (frames/s from the first
        // frame to the last).
        "interop-bench-consume" => {
            let mut c = Channel::new(&name).dynamic(element, &dims).open()?;
            println!("attached");
            let mut start = None;
            let mut sum = 0u64;
            for _ in 0..frames {
                let f = c.next(Some(Duration::from_secs(60)))?;
                start.get_or_insert_with(std::time::Instant::now);
                let b = f.held().context("a lossless ring holds its frames")?;
                sum += u64::from(b[0]) + u64::from(b[b.len() - 1]);
            }
            let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
            println!("rate {} {sum}", (frames - 1) as f64 / secs);
            Ok(())
        }
        // interop-produce NAME ELEMENT DIMS FRAMES: a ring:8:block channel of ELEMENT frames
        // of shape DIMS; prints "created", waits for a line on stdin, publishes FRAMES pattern frames (waiting for its
        // consumer), prints "published N", exits.
        "interop-produce" => {
            let mut p = Channel::new(&name)
                .policy(Policy::ring(8))
                .dynamic(element, &dims)
                .create()?;
            println!("created");
            // Frames go to consumers attached before they are committed: wait for the go.
            let mut go = String::new();
            std::io::stdin().read_line(&mut go)?;
            for _ in 0..frames {
                let mut slot = loop {
                    match p.loan() {
                        Ok(s) => break s,
                        Err(labhub::shm::PublishError::Timeout { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                };
                let k = slot.frame_id();
                fill(&mut slot, k);
                slot.commit();
            }
            println!("published {}", p.next_frame_id());
            Ok(())
        }
        // interop-consume NAME ELEMENT DIMS FRAMES: opens the channel insisting on ELEMENT and
        // DIMS, prints "attached", reads FRAMES frames checking the pattern, prints
        // "frame K ELEMENT DIMS" for each and "done".
        "interop-consume" => {
            let mut c = Channel::new(&name).dynamic(element, &dims).open()?;
            println!("attached");
            for _ in 0..frames {
                let f = c.next(Some(Duration::from_secs(30)))?;
                let k = f.frame_id();
                let bytes = match f.held() {
                    Some(b) => b.to_vec(),
                    None => f.to_vec()?,
                };
                let mut want = vec![0u8; bytes.len()];
                fill(&mut want, k);
                if bytes != want {
                    bail!("frame {k} does not carry its pattern");
                }
                println!("frame {k} {} {:?}", f.element_type(), f.shape());
            }
            println!("done");
            Ok(())
        }
        other => bail!("unknown role {other}"),
    }
}
