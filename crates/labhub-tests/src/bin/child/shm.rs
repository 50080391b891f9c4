//! Child roles for the shm tests. Each prints progress lines on stdout (flushed) that the test
//! waits for, and several block forever so the test can SIGKILL or SIGSTOP them mid-operation.
//! POLICY arguments are policies as `labhub::shm::Policy` writes them (`latest`,
//! `ring:8:block:30s`, …).

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use labhub::shm::{Channel, ElementType, Policy, ReadError};

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
    arg.parse::<Policy>().context("the policy argument")
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
            let mut p = Channel::new(arg(0)?)
                .policy(policy(arg(1)?)?)
                .bytes(arg(2)?.parse()?)
                .create()?;
            say("created");
            let frames: u64 = arg(3)?.parse()?;
            for _ in 0..frames {
                let mut w = p.loan()?;
                let id = w.frame_id();
                fill_pattern(&mut w, id);
                w.commit();
            }
            say(format!("published {}", p.next_frame_id()));
            park_forever()
        }
        // shm-producer-midwrite NAME POLICY SLOT_SIZE FRAMES: publishes FRAMES frames, then
        // loans frame FRAMES, overwrites half its slot, prints "mid-write ID" and blocks.
        "shm-producer-midwrite" => {
            let mut p = Channel::new(arg(0)?)
                .policy(policy(arg(1)?)?)
                .bytes(arg(2)?.parse()?)
                .create()?;
            let frames: u64 = arg(3)?.parse()?;
            for _ in 0..frames {
                let mut w = p.loan()?;
                let id = w.frame_id();
                fill_pattern(&mut w, id);
                w.commit();
            }
            let mut w = p.loan()?;
            let id = w.frame_id();
            let half = w.len() / 2;
            w[..half].fill(0xEE);
            say(format!("mid-write {id}"));
            park_forever()
        }
        // shm-consumer-hold NAME: attaches, takes the next frame, prints "holding ID", blocks.
        "shm-consumer-hold" => {
            let mut c = Channel::new(arg(0)?).open()?;
            say("attached");
            let f = c.next(Some(Duration::from_secs(30)))?;
            say(format!("holding {}", f.frame_id()));
            park_forever()
        }
        // shm-consumer-attached NAME: attaches, prints "attached", blocks (holds a table entry).
        "shm-consumer-attached" => {
            let _c = Channel::new(arg(0)?).open()?;
            say("attached");
            park_forever()
        }
        // shm-consumer-verify NAME FRAMES: reads until frame FRAMES-1 arrived; every frame that
        // is whole (held, or copied and checked) must carry its own id and pattern. Prints
        // "done valid=V overwritten=O missed=M last=L"; fails on a torn frame accepted as
        // whole, or on out-of-order ids.
        "shm-consumer-verify" => {
            let frames: u64 = arg(1)?.parse()?;
            let mut c = Channel::new(arg(0)?).element::<u8>().open()?;
            say("attached");
            let (mut valid, mut overwritten, mut last) = (0u64, 0u64, None::<u64>);
            loop {
                let f = c.next(Some(Duration::from_secs(30)))?;
                let id = f.frame_id();
                if last.is_some_and(|l| id <= l) {
                    bail!("frame {id} after frame {last:?}");
                }
                let seen = match f.held() {
                    Some(items) => Ok(check_pattern(items)),
                    None => f.to_vec().map(|v| check_pattern(&v)),
                };
                match seen {
                    Ok(seen) => {
                        if seen != Some(id) {
                            bail!("frame {id} was whole but its bytes say {seen:?}");
                        }
                        valid += 1;
                    }
                    Err(ReadError::Overwritten { .. }) => overwritten += 1,
                    Err(e) => return Err(e.into()),
                }
                drop(f);
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
        // shm-consumer-meta NAME: reads one frame (runtime-typed) and prints its id, element
        // type, shape, length in elements, timestamp and the sum of its elements (u8 or u16).
        "shm-consumer-meta" => {
            let mut c = Channel::new(arg(0)?).open()?;
            say("attached");
            let f = c.next(Some(Duration::from_secs(30)))?;
            let bytes = f.to_vec()?;
            let element = f.element_type();
            let sum: u64 = match element {
                ElementType::U16 => bytes
                    .chunks_exact(2)
                    .map(|w| u64::from(u16::from_le_bytes([w[0], w[1]])))
                    .sum(),
                _ => bytes.iter().map(|&b| u64::from(b)).sum(),
            };
            say(format!(
                "frame {} element {element} shape {:?} len {} ts {} sum {sum}",
                f.frame_id(),
                f.shape(),
                bytes.len() as u64 / element.size(),
                f.timestamp_ns(),
            ));
            Ok(())
        }
        // shm-consumer-read NAME: reads frames until killed, printing "frame ID" for each and
        // "error KIND" for each failed read (every wait bounded by 100 ms, "idle" printed on
        // a timeout after a frame). For tests that stop, evict or corrupt a live reader.
        "shm-consumer-read" => {
            let mut c = Channel::new(arg(0)?).element::<u8>().open()?;
            say("attached");
            let mut idle_said = false;
            loop {
                match c
                    .next(Some(Duration::from_millis(100)))
                    .map(|f| f.frame_id())
                {
                    Ok(id) => {
                        idle_said = false;
                        say(format!("frame {id} missed {}", c.missed()));
                    }
                    Err(ReadError::Timeout) => {
                        if !idle_said {
                            idle_said = true;
                            say("idle");
                        }
                    }
                    Err(ReadError::Evicted { .. }) => {
                        say("error evicted");
                        park_forever()
                    }
                    Err(e) => say(format!("error {e}")),
                }
            }
        }
        // shm-create NAME SIZE: creates a byte channel of SIZE-byte frames (latest), then fills
        // the whole slot; prints "created" and "written", or "nospace needed=N available=A"
        // or "error <message>".
        "shm-create" => {
            let created = Channel::new(arg(0)?)
                .policy(Policy::Latest)
                .bytes(arg(1)?.parse()?)
                .create();
            let mut p = match created {
                Ok(p) => p,
                Err(labhub::shm::ChannelError::NoSpace {
                    needed, available, ..
                }) => {
                    say(format!("nospace needed={needed} available={available:?}"));
                    return Ok(());
                }
                Err(e) => {
                    say(format!("error {e}"));
                    return Ok(());
                }
            };
            say("created");
            let mut w = p.loan()?;
            w.fill(0xAB);
            w.commit();
            say("written");
            Ok(())
        }
        // shm-churn NAME ROUNDS: opens and closes a consumer of channel NAME ROUNDS times,
        // checking each time that its table entry stays its own; prints "done", or "stolen" if
        // an entry it claimed was taken by another process.
        "shm-churn" => {
            let rounds: u64 = arg(1)?.parse()?;
            say("started");
            for _ in 0..rounds {
                let mut c = match Channel::new(arg(0)?).open() {
                    Ok(c) => c,
                    Err(labhub::shm::ChannelError::ConsumerTableFull { .. }) => continue,
                    Err(e) => return Err(e.into()),
                };
                for _ in 0..3 {
                    match c.next(Some(Duration::ZERO)).map(|_| ()) {
                        Ok(()) | Err(ReadError::Timeout) => {}
                        Err(ReadError::Evicted { .. }) => {
                            say("stolen");
                            return Ok(());
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                if !c.is_attached() {
                    say("stolen");
                    return Ok(());
                }
            }
            say("done");
            Ok(())
        }
        // shm-echo IN OUT FRAMES: creates channel OUT (a 4-slot blocking ring), attaches to IN
        // (blocking wait mode), prints "ready", then republishes each of FRAMES frames of IN on
        // OUT with the same first 8 bytes; every wait is bounded by 2 s.
        "shm-echo" => {
            let mut out = Channel::new(arg(1)?)
                .policy("ring:4:block:2s".parse()?)
                .bytes(64)
                .create()?;
            let mut c = Channel::new(arg(0)?).element::<u8>().open()?;
            let frames: u64 = arg(2)?.parse()?;
            say("ready");
            for _ in 0..frames {
                let f = c.next(Some(Duration::from_secs(2)))?;
                let mut id = [0u8; 8];
                id.copy_from_slice(&f.to_vec()?[..8]);
                drop(f);
                out.publish(&id, &[8])?;
            }
            Ok(())
        }
        other => bail!("unknown shm role {other:?}"),
    }
}
