//! Memfd channels in one process: what a broker would do with the descriptors (reopen them
//! for each holder) done by hand.

use std::os::fd::AsFd;
use std::time::Duration;

use super::*;
use crate::sys;

fn settings(name: &str) -> builder::Settings {
    Channel::new(name)
        .policy(Policy::ring(4))
        .bytes(64)
        .settings()
        .clone()
}

/// What a broker hands each holder: new open file descriptions of the same two files.
fn granted(pair: &MemfdPair) -> MemfdPair {
    MemfdPair {
        control: sys::reopen(pair.control.as_fd(), true).unwrap(),
        data: sys::reopen(pair.data.as_fd(), false).unwrap(),
    }
}

#[test]
fn a_memfd_channel_is_sealed_read_only_for_consumers_and_continues_after_a_takeover() {
    let name = format!("memfd-unit-{}", std::process::id());
    let s = settings(&name);
    let mut p = Producer::<u8>::create_memfd(&s, None).unwrap();
    let held = granted(&p.memfds().unwrap());
    assert_eq!(
        sys::seals(held.data.as_fd()).unwrap() & sys::DATA_SEALS,
        sys::DATA_SEALS
    );
    assert_eq!(
        sys::seals(held.control.as_fd()).unwrap() & sys::CONTROL_SEALS,
        sys::CONTROL_SEALS
    );
    let mut c = Consumer::<u8>::open_memfd(&s, granted(&held)).unwrap();
    assert!(c.producer_alive());
    p.publish(b"one", &[3]).unwrap();
    let f = c.next(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(f.held(), Some(&b"one"[..]));
    drop(f);
    let report = inspect_memfd(p.channel(), granted(&held)).unwrap();
    assert_eq!(report.sharing, Sharing::Memfd);
    assert!(report.shm_name.is_none());
    assert_eq!(report.consumers.len(), 1);
    assert!(report.consumers[0].alive, "a lock-held entry is alive");
    assert!(report.producer.unwrap().alive);

    // Another process may not take over a live producer's channel.
    assert!(matches!(
        Producer::<u8>::create_memfd(&s, Some(granted(&held))),
        Err(ChannelError::ChannelBusy { .. })
    ));
    let old_instance = c.instance();
    drop(p);
    assert!(!c.producer_alive(), "its lock went with it");
    let mut p2 = Producer::<u8>::create_memfd(&s, Some(granted(&held))).unwrap();
    assert_eq!(p2.next_frame_id(), 1, "frame ids continue");
    let new = granted(&p2.memfds().unwrap());
    let mut c2 = Consumer::<u8>::open_memfd(&s, new).unwrap();
    assert_ne!(c2.instance(), old_instance, "a new incarnation");
    assert_eq!(
        c2.latest().unwrap().unwrap().to_vec().unwrap(),
        b"one",
        "the last frame came along"
    );
    p2.publish(b"two", &[3]).unwrap();
    let f = c2.next(Some(Duration::from_secs(5))).unwrap();
    assert_eq!((f.frame_id(), f.held()), (1, Some(&b"two"[..])));
}

#[test]
fn consumers_holding_their_locks_are_alive_and_a_freed_entry_is_claimed_again() {
    let name = format!("memfd-lock-{}", std::process::id());
    let s = settings(&name);
    let p = Producer::<u8>::create_memfd(&s, None).unwrap();
    let held = granted(&p.memfds().unwrap());
    let a = Consumer::<u8>::open_memfd(&s, granted(&held)).unwrap();
    let b = Consumer::<u8>::open_memfd(&s, granted(&held)).unwrap();
    let alive = || {
        let r = inspect_memfd(p.channel(), granted(&held)).unwrap();
        r.consumers
            .iter()
            .filter(|c| c.alive)
            .map(|c| c.index)
            .collect::<Vec<_>>()
    };
    assert_eq!(alive(), [0, 1]);
    drop(a);
    assert_eq!(alive(), [1]);
    let c = Consumer::<u8>::open_memfd(&s, granted(&held)).unwrap();
    assert_eq!(
        alive(),
        [0, 1],
        "the freed entry and its lock were taken again"
    );
    assert_eq!(c.stats().evicted, 0);
    drop((b, c));
}
