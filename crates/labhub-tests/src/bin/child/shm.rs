//! Child roles for the shm tests. Each prints progress lines on stdout (flushed) that the test
//! waits for, and several block forever so the test can SIGKILL them mid-operation.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use labhub::shm::{
    AttachOptions, Backpressure, ChannelConfig, Consumer, FrameMeta, Policy, Producer, ReadError,
};

fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// Frame `id`'s payload: 8 bytes of id, then bytes `(id + i) as u8` (as the tests' `pattern`).
fn fill_pattern(buf: &mut [u8], id: u64) {
    let n = buf.len().min(8);
    buf[..n].copy_from_slice(&id.to_le_bytes()[..n]);
    for (i, b) in buf.iter_mut().enumerate().skip(8) {
        *b = (id as usize).wrapping_add(i) as u8;
    }
}

fn check_pattern(buf: &[u8]) -> Option<u64> {
    if buf.len() < 8 {
        return None;
    }
    let id = u64::from_le_bytes(buf[..8].try_into().ok()?);
    buf.iter()
        .enumerate()
        .skip(8)
        .all(|(i, &b)| b == (id as usize).wrapping_add(i) as u8)
        .then_some(id)
}

fn policy(arg: &str) -> anyhow::Result<Policy> {
    Ok(match arg {
        "latest" => Policy::Latest,
        "double" => Policy::DoubleBuffer,
        s if s.starts_with("ring-block-") => Policy::Ring {
            slots: s["ring-block-".len()..].parse()?,
            when_full: Backpressure::Block {
                timeout: Duration::from_secs(30),
            },
        },
        s if s.starts_with("ring-fail-") => Policy::Ring {
            slots: s["ring-fail-".len()..].parse()?,
            when_full: Backpressure::Fail,
        },
        other => bail!("unknown policy {other:?}"),
    })
}

/// Dispatches `shm-*` roles.
pub fn run(role: &str, args: &[String]) -> anyhow::Result<()> {
    let arg = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("{role}: missing argument {i}"))
    };
    match role {
        // shm-producer NAME POLICY SLOT_SIZE FRAMES: publishes FRAMES pattern frames, prints
        // "published N", then stays alive (holding the channel) until killed.
        "shm-producer" => {
            let slot: u64 = arg(2)?.parse()?;
            let mut p = Producer::create(arg(0)?, ChannelConfig::new(policy(arg(1)?)?, slot))?;
            say("created");
            let frames: u64 = arg(3)?.parse()?;
            for _ in 0..frames {
                let mut w = p.begin_publish()?;
                let id = w.frame_id();
                fill_pattern(w.data_mut(), id);
                w.publish()?;
            }
            say(format!("published {}", p.next_frame_id()));
            park_forever()
        }
        // shm-producer-midwrite NAME POLICY SLOT_SIZE FRAMES: publishes FRAMES frames, then
        // begins frame FRAMES, overwrites half its slot, prints "mid-write ID" and blocks.
        "shm-producer-midwrite" => {
            let slot: u64 = arg(2)?.parse()?;
            let mut p = Producer::create(arg(0)?, ChannelConfig::new(policy(arg(1)?)?, slot))?;
            let frames: u64 = arg(3)?.parse()?;
            for _ in 0..frames {
                let mut w = p.begin_publish()?;
                let id = w.frame_id();
                fill_pattern(w.data_mut(), id);
                w.publish()?;
            }
            let mut w = p.begin_publish()?;
            let id = w.frame_id();
            let data = w.data_mut();
            let half = data.len() / 2;
            data[..half].fill(0xEE);
            say(format!("mid-write {id}"));
            park_forever()
        }
        // shm-consumer-hold NAME: attaches, takes the next frame, prints "holding ID", blocks.
        "shm-consumer-hold" => {
            let mut c = Consumer::attach(arg(0)?, AttachOptions::default())?;
            say("attached");
            let f = c.next(Some(Duration::from_secs(30)))?;
            say(format!("holding {}", f.frame_id()));
            park_forever()
        }
        // shm-consumer-attached NAME: attaches, prints "attached", blocks (holds a table entry).
        "shm-consumer-attached" => {
            let _c = Consumer::attach(arg(0)?, AttachOptions::default())?;
            say("attached");
            park_forever()
        }
        // shm-consumer-verify NAME FRAMES: reads until frame FRAMES-1 arrived; every frame that
        // validates must carry its own id and pattern. Prints "done valid=V overwritten=O
        // missed=M last=L"; fails on a torn frame that validated, or on out-of-order ids.
        "shm-consumer-verify" => {
            let frames: u64 = arg(1)?.parse()?;
            let mut c = Consumer::attach(arg(0)?, AttachOptions::default())?;
            say("attached");
            let (mut valid, mut overwritten, mut last) = (0u64, 0u64, None::<u64>);
            loop {
                let f = c.next(Some(Duration::from_secs(30)))?;
                let id = f.frame_id();
                if last.is_some_and(|l| id <= l) {
                    bail!("frame {id} after frame {last:?}");
                }
                let seen = check_pattern(f.data());
                match f.finish() {
                    Ok(()) => {
                        if seen != Some(id) {
                            bail!("frame {id} validated but its bytes say {seen:?}");
                        }
                        valid += 1;
                    }
                    Err(ReadError::Overwritten { .. }) => overwritten += 1,
                    Err(e) => return Err(e.into()),
                }
                last = Some(id);
                if id + 1 >= frames {
                    break;
                }
            }
            say(format!(
                "done valid={valid} overwritten={overwritten} missed={} last={}",
                c.missed(),
                last.unwrap_or(0)
            ));
            Ok(())
        }
        // shm-consumer-meta NAME: reads one frame and prints its id, length, type hash, dims
        // and payload checksum.
        "shm-consumer-meta" => {
            let mut c = Consumer::attach(arg(0)?, AttachOptions::default())?;
            say("attached");
            let f = c.next(Some(Duration::from_secs(30)))?;
            let data = f.copy_to_vec()?;
            let m: FrameMeta = *f.meta();
            say(format!(
                "frame {} len {} type {:#x} dims {:?} sum {}",
                f.frame_id(),
                data.len(),
                m.type_hash,
                m.dims(),
                data.iter().map(|&b| u64::from(b)).sum::<u64>()
            ));
            Ok(())
        }
        // shm-echo IN OUT FRAMES: creates channel OUT (a 4-slot blocking ring), attaches to IN
        // (blocking wait mode), prints "ready", then republishes each of FRAMES frames of IN on
        // OUT with the same first 8 bytes; every wait is bounded by 2 s.
        "shm-echo" => {
            let ring = Policy::Ring {
                slots: 4,
                when_full: Backpressure::Block {
                    timeout: Duration::from_secs(2),
                },
            };
            let mut out = Producer::create(arg(1)?, ChannelConfig::new(ring, 64))?;
            let mut c = Consumer::attach(arg(0)?, AttachOptions::default())?;
            let frames: u64 = arg(2)?.parse()?;
            say("ready");
            for _ in 0..frames {
                let f = c.next(Some(Duration::from_secs(2)))?;
                let mut id = [0u8; 8];
                id.copy_from_slice(&f.data()[..8]);
                f.finish()?;
                out.publish_bytes(&id, &FrameMeta::default())?;
            }
            Ok(())
        }
        other => bail!("unknown shm role {other:?}"),
    }
}
