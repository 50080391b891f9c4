//! `labhub record` and `labhub replay` as processes: recordings read back by the real
//! zarr-python, a SIGKILLed recorder, replay into live channels, hostile recordings, and the
//! per-consumer delivery modes of one channel shown by `labhub info`.

use super::*;

use std::path::PathBuf;
use std::time::Instant;

use labhub::record::{RecordOptions, Recorder, ReplayOptions, Replayer};
use labhub::shm::{self, Backpressure, DeliveryMode};

#[path = "python.rs"]
mod python;

/// A recording directory name inside a fresh temporary directory.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    (dir, path)
}

/// Waits until `cond` holds, failing after the watchdog.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !cond() {
        assert!(Instant::now() < deadline, "watchdog: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn consumers_of(name: &str) -> usize {
    shm::inspect(name).map_or(0, |r| r.consumers.len())
}

/// Removes channel `name` when dropped.
struct Remove(String);
impl Drop for Remove {
    fn drop(&mut self) {
        let _ = shm::remove_channel(&self.0);
    }
}

fn python_or_skip() -> Option<PathBuf> {
    let p = python::zarr_python();
    if p.is_none() {
        eprintln!("SKIPPED: python3 is not installed, so zarr-python cannot read the recording");
    }
    p
}

#[test]
fn a_recording_opens_in_zarr_python_with_its_frames_shapes_and_metadata() {
    let Some(py) = python_or_skip() else { return };
    let name = unique("rec-py");
    let _rm = Remove(name.clone());
    let mut camera = shm::Channel::new(&name)
        .policy(Policy::ring(16))
        .frames::<u16>(&[3, 4])
        .flex_size(256)
        .schema("camera-frame", 2)
        .create()
        .unwrap();
    let (_tmp, path) = scratch();
    let mut rec = labhub(Path::new("/nonexistent-home"));
    rec.args(["record", &name, "--no-hub", "-o"])
        .arg(&path)
        .args([
            "--frames",
            "5",
            "--attr",
            "operator=ada",
            "--attr",
            "sample=A1",
            "--json",
        ]);
    let child = rec
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the recorder attaches", || consumers_of(&name) == 1);
    camera
        .write_state(&serde_json::json!({"exposure_ms": 1}))
        .unwrap();
    let full: Vec<u16> = (0..12).collect();
    camera.publish(&full, &[3, 4]).unwrap();
    camera
        .publish(&[100, 101, 102, 103, 104, 105], &[2, 3])
        .unwrap();
    wait_for("the recorder reads frame 1", || {
        shm::inspect(&name).is_ok_and(|r| r.consumers[0].position >= 2)
    });
    camera
        .write_state(&serde_json::json!({"exposure_ms": 2}))
        .unwrap();
    for i in 0..3u16 {
        camera.publish(&[i; 12], &[3, 4]).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(summary["channels"][0]["frames"], 5, "{summary}");
    assert_eq!(summary["channels"][0]["losses"], 0, "{summary}");

    let r = python::read_recording(&py, &path);
    assert_eq!(r["zarr"], "3.1.6");
    let root = &r["attrs"];
    assert_eq!(root["labhub_recording"], 1);
    assert_eq!(root["run_id"], summary["run_id"]);
    assert_eq!(root["run_id"].as_str().unwrap().len(), 32);
    assert_eq!(root["attributes"]["operator"], "ada");
    assert_eq!(root["attributes"]["sample"], "A1");
    assert_eq!(root["complete"], true);
    assert!(root["started_ns"].as_u64().unwrap() <= root["stopped_ns"].as_u64().unwrap());
    assert!(!root["host"].as_str().unwrap().is_empty());
    let ch = &r["channels"][name.as_str()];
    assert_eq!(ch["dtype"], "uint16");
    assert_eq!(ch["shape"], serde_json::json!([5, 3, 4]));
    assert_eq!(ch["frame_id"], serde_json::json!([0, 1, 2, 3, 4]));
    assert_eq!(
        ch["shapes"],
        serde_json::json!([[3, 4], [2, 3], [3, 4], [3, 4], [3, 4]])
    );
    assert_eq!(ch["frames"][0], serde_json::json!(full));
    assert_eq!(
        ch["frames"][1],
        serde_json::json!([100, 101, 102, 103, 104, 105])
    );
    assert_eq!(ch["frames"][4], serde_json::json!(vec![2; 12]));
    let ts = ch["timestamp_ns"].as_array().unwrap();
    assert!(ts.windows(2).all(|w| w[0].as_u64() <= w[1].as_u64()));
    let attrs = &ch["attrs"];
    assert_eq!(attrs["element"], "u16");
    assert_eq!(attrs["numpy_dtype"], "<u2");
    assert_eq!(attrs["max_shape"], serde_json::json!([3, 4]));
    assert_eq!(attrs["policy"], "ring:16:block");
    assert_eq!(attrs["schema_name"], "camera-frame");
    assert_eq!(attrs["schema_version"], 2);
    assert_eq!(attrs["frames"], 5);
    assert_eq!(attrs["losses"]["missed"], 0);
    assert_eq!(attrs["losses"]["frame_id_gaps"], 0);
    let states = attrs["state_changes"].as_array().unwrap();
    assert_eq!(states.len(), 2, "{attrs}");
    assert_eq!(states[0]["frame_index"], 0);
    assert_eq!(states[0]["state"]["exposure_ms"], 1);
    assert_eq!(states[1]["frame_index"], 2);
    assert_eq!(states[1]["state"]["exposure_ms"], 2);
}

#[test]
fn a_sigkilled_recorder_leaves_a_recording_zarr_python_reads_up_to_its_last_flush() {
    let Some(py) = python_or_skip() else { return };
    let name = unique("rec-kill");
    let _rm = Remove(name.clone());
    let mut camera = shm::Channel::new(&name)
        .policy(Policy::ring(64))
        .frames::<u32>(&[64])
        .create()
        .unwrap();
    let (_tmp, path) = scratch();
    let mut rec = labhub(Path::new("/nonexistent-home"));
    rec.args([
        "record",
        &name,
        "--no-hub",
        "--flush-interval",
        "20ms",
        "--shard-size",
        "4KiB",
        "-o",
    ])
    .arg(&path)
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    let mut child = rec.spawn().unwrap();
    wait_for("the recorder attaches", || consumers_of(&name) == 1);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut id = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // Under backpressure a frame may time out; the next one is tried.
                if camera.publish(&[id; 64], &[64]).is_ok() {
                    id += 1;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            camera
        })
    };
    let group = path.join(&name).join("zarr.json");
    wait_for("at least 50 frames flushed", || {
        std::fs::read(&group)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["attributes"]["frames"].as_u64())
            .is_some_and(|n| n >= 50)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    drop(publisher.join().unwrap());

    let r = python::read_recording(&py, &path);
    assert_eq!(r["attrs"]["complete"], false, "killed before it completed");
    let ch = &r["channels"][name.as_str()];
    let n = ch["shape"][0].as_u64().unwrap();
    assert!(n >= 50, "{n}");
    let ids = ch["frame_id"].as_array().unwrap();
    assert_eq!(ids.len() as u64, n);
    for (i, (id, frame)) in ids.iter().zip(ch["frames"].as_array().unwrap()).enumerate() {
        assert_eq!(id.as_u64(), Some(i as u64), "frame ids are consecutive");
        assert_eq!(frame, &serde_json::json!(vec![i; 64]), "frame {i} whole");
    }
    // The replayer accepts it too.
    let replay = Replayer::open(&path).unwrap();
    assert_eq!(replay.channels()[0].frames, n);
}

/// A recording of `frames` u8 frames of largest shape [2, 4] made in this process, the frame
/// i stamped `i * spacing_ms` ms after the first, with a state before frames 0 and 2.
fn record_here(name: &str, path: &Path, frames: u64, spacing_ms: u64) {
    let mut camera = shm::Channel::new(name)
        .policy(Policy::ring(16))
        .frames::<u8>(&[2, 4])
        .flex_size(128)
        .create()
        .unwrap();
    let options = RecordOptions {
        max_frames: Some(frames),
        ..RecordOptions::default()
    };
    let mut recorder = Recorder::create(path, options).unwrap();
    recorder
        .add(shm::Channel::new(name).open().unwrap())
        .unwrap();
    let recording = std::thread::spawn(move || recorder.run(|_| {}));
    let t0 = 1_700_000_000_000_000_000u64;
    for i in 0..frames {
        if i == 0 || i == 2 {
            // A state change lands before the frames the recorder reads after it.
            wait_for("the recorder to catch up", || {
                shm::inspect(name).is_ok_and(|r| r.consumers[0].position >= i)
            });
            camera
                .write_state(&serde_json::json!({ "step": i }))
                .unwrap();
        }
        let shape: &[u64] = if i % 2 == 0 { &[2, 4] } else { &[1, 3] };
        let mut slot = camera.loan_shape(shape).unwrap();
        slot.fill(i as u8 + 1);
        slot.set_timestamp_ns(t0 + i * spacing_ms * 1_000_000);
        slot.commit();
    }
    recording.join().unwrap().unwrap();
}

#[test]
fn replay_publishes_a_recording_into_a_live_channel_with_its_shapes_and_states() {
    let name = unique("rec-src");
    let _rm = Remove(name.clone());
    let (_tmp, path) = scratch();
    record_here(&name, &path, 6, 1);
    let replay = Replayer::open(&path).unwrap();
    // From the files, and preloaded into memory: the same frames, shapes and states.
    for preload in [None, Some("--preload")] {
        let again = unique("rec-again");
        let _rm = Remove(again.clone());
        // A consumer that starts first, with the recorded settings.
        let mut viewer = replay
            .configure(0, shm::Channel::new(&again))
            .open_or_create()
            .unwrap();
        let r = run({
            let mut c = labhub(Path::new("/nonexistent-home"));
            c.arg("replay")
                .arg(&path)
                .args(["--as", &again, "--rate", "max", "--no-hub", "--json"])
                .args(preload);
            c
        });
        assert_eq!(r.code, 0, "{preload:?}: {}", r.stderr);
        let v = json(&r.stdout);
        assert_eq!(v["channels"][0]["channel"], again.as_str());
        assert_eq!(v["channels"][0]["recorded_as"], name.as_str());
        assert_eq!(v["channels"][0]["frames"], 6);
        for i in 0..6u64 {
            let f = viewer.next(Some(WATCHDOG)).unwrap();
            let shape: &[u64] = if i % 2 == 0 { &[2, 4] } else { &[1, 3] };
            assert_eq!(f.shape(), shape, "{preload:?}: frame {i}");
            assert_eq!(f.to_vec().unwrap(), vec![i as u8 + 1; f.len()]);
            // The state written before frame 2 reaches frames 2.. only, as recorded.
            let expect = if i < 2 { 1 } else { 2 };
            assert_eq!(f.state_version(), expect, "{preload:?}: frame {i}");
        }
        let (version, state) = viewer.read_state::<Value>().unwrap().unwrap();
        assert_eq!((version, &state), (2, &serde_json::json!({"step": 2})));
    }
    // A preload limit below the recording's frames is refused before anything is read.
    let small = unique("rec-small");
    let _rm = Remove(small.clone());
    let r = run({
        let mut c = labhub(Path::new("/nonexistent-home"));
        c.arg("replay")
            .arg(&path)
            .args(["--as", &small, "--preload", "16", "--no-hub"]);
        c
    });
    assert_eq!(r.code, FAILURE, "{}", r.stderr);
    assert!(
        r.stderr.contains("more than the limit of 16"),
        "{}",
        r.stderr
    );
}

#[test]
fn replay_keeps_the_recorded_timing_scaled_by_the_rate() {
    let name = unique("rec-timing");
    let again = unique("rec-timing-again");
    let _rm = (Remove(name.clone()), Remove(again.clone()));
    let (_tmp, path) = scratch();
    // 5 frames 40 ms apart: 160 ms from the first to the last.
    record_here(&name, &path, 5, 40);
    let replay = Replayer::open(&path).unwrap();
    for (rate, at_least) in [("1x", 160.0), ("2x", 80.0)] {
        let producer = replay
            .configure(0, shm::Channel::new(&again))
            .create()
            .unwrap();
        let mut viewer = shm::Channel::new(&again).open().unwrap();
        let options = ReplayOptions {
            rate: rate.parse().unwrap(),
            keep_timestamps: true,
            ..ReplayOptions::default()
        };
        let started = Instant::now();
        let played = std::thread::scope(|s| {
            let h = s.spawn(|| replay.play(vec![producer], &options));
            let mut seen = Vec::new();
            for _ in 0..5 {
                let f = viewer.next(Some(WATCHDOG)).unwrap();
                seen.push((Instant::now(), f.timestamp_ns()));
            }
            (h.join().unwrap().unwrap(), seen)
        });
        assert_eq!(played.0.frames, [5]);
        let seen = played.1;
        // The last frame is published no earlier than the recorded span (scaled) after the
        // replay began: a minimum, never a maximum.
        let span = (seen[4].0 - started).as_secs_f64() * 1e3;
        assert!(span >= at_least, "{rate}: {span} ms");
        assert_eq!(
            seen[4].1 - seen[0].1,
            160_000_000,
            "recorded timestamps kept"
        );
        drop(viewer);
        shm::remove_channel(&again).unwrap();
    }
}

/// Writes `value` into the JSON document `file` at the pointer `at`.
fn edit_json(file: &Path, at: &str, value: Value) {
    let mut doc: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    *doc.pointer_mut(at)
        .unwrap_or_else(|| panic!("{at} in {}", file.display())) = value;
    std::fs::write(file, serde_json::to_vec(&doc).unwrap()).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn hostile_or_truncated_recordings_are_typed_errors_at_replay() {
    let name = unique("rec-bad");
    let _rm = Remove(name.clone());
    let (tmp, good) = scratch();
    record_here(&name, &good, 3, 1);
    let ch = |p: &Path| p.join(&name);
    let shard = |p: &Path| ch(p).join("frames/c/0/0/0");
    type Mutation<'a> = (&'a str, Box<dyn Fn(&Path) + 'a>, &'a str);
    let cases: Vec<Mutation<'_>> = vec![
        (
            "truncated root zarr.json",
            Box::new(|p: &Path| {
                let f = p.join("zarr.json");
                let b = std::fs::read(&f).unwrap();
                std::fs::write(&f, &b[..b.len() / 2]).unwrap();
            }),
            "zarr.json",
        ),
        (
            "a 5 MiB zarr.json",
            Box::new(|p: &Path| {
                let mut b = vec![b' '; 5 << 20];
                b.extend_from_slice(b"{}");
                std::fs::write(ch(p).join("frames/zarr.json"), b).unwrap();
            }),
            "limit",
        ),
        (
            "a ring of huge slots",
            Box::new(|p: &Path| {
                let group = ch(p).join("zarr.json");
                edit_json(&group, "/attributes/policy", "ring:65536:block".into());
                edit_json(
                    &group,
                    "/attributes/max_shape",
                    serde_json::json!([1024, 1024]),
                );
            }),
            "slots",
        ),
        (
            "another dtype",
            Box::new(|p: &Path| {
                edit_json(
                    &ch(p).join("frames/zarr.json"),
                    "/data_type",
                    "float32".into(),
                );
            }),
            "data_type",
        ),
        (
            "a huge declared frame",
            Box::new(|p: &Path| {
                edit_json(
                    &ch(p).join("zarr.json"),
                    "/attributes/max_shape",
                    serde_json::json!([1u64 << 40, 1u64 << 40]),
                );
            }),
            "a frame",
        ),
        (
            "a huge shard",
            Box::new(|p: &Path| {
                edit_json(
                    &ch(p).join("frames/zarr.json"),
                    "/chunk_grid/configuration/chunk_shape/0",
                    (1u64 << 40).into(),
                );
            }),
            "chunk_grid",
        ),
        (
            "a compressed frames array",
            Box::new(|p: &Path| {
                edit_json(
                    &ch(p).join("frames/zarr.json"),
                    "/codecs/0/configuration/codecs",
                    serde_json::json!([{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd", "configuration": {"level": 1, "checksum": false}}]),
                );
            }),
            "codec",
        ),
        (
            "a channel name that escapes the recording",
            Box::new(|p: &Path| {
                edit_json(
                    &p.join("zarr.json"),
                    "/attributes/channels",
                    serde_json::json!(["../../etc"]),
                );
            }),
            "channels",
        ),
        (
            "a shape beyond the largest",
            Box::new(|p: &Path| {
                let f = ch(p).join("shape/c/0/0");
                let mut b = std::fs::read(&f).unwrap();
                b[..8].copy_from_slice(&1000u64.to_le_bytes());
                std::fs::write(&f, b).unwrap();
            }),
            "beyond",
        ),
        (
            "a corrupt shard index",
            Box::new(|p: &Path| {
                let f = shard(p);
                let mut b = std::fs::read(&f).unwrap();
                b[3] ^= 0xff;
                std::fs::write(&f, b).unwrap();
            }),
            "CRC32C",
        ),
        (
            "a truncated shard",
            Box::new(|p: &Path| {
                let f = shard(p);
                let b = std::fs::read(&f).unwrap();
                std::fs::write(&f, &b[..10]).unwrap();
            }),
            "shard index",
        ),
        (
            "a chunk outside its shard",
            Box::new(|p: &Path| {
                let f = shard(p);
                let mut b = std::fs::read(&f).unwrap();
                let frames = (b.len() - 4) / 16; // not exact: recomputed from the index length below
                let _ = frames;
                let per_shard: usize = {
                    let doc: Value = serde_json::from_slice(
                        &std::fs::read(ch(p).join("frames/zarr.json")).unwrap(),
                    )
                    .unwrap();
                    doc["chunk_grid"]["configuration"]["chunk_shape"][0]
                        .as_u64()
                        .unwrap() as usize
                };
                b[..8].copy_from_slice(&(1u64 << 50).to_le_bytes());
                let crc = crc32c(&b[..per_shard * 16]);
                b[per_shard * 16..per_shard * 16 + 4].copy_from_slice(&crc.to_le_bytes());
                std::fs::write(&f, b).unwrap();
            }),
            "outside",
        ),
    ];
    for (i, (what, mutate, expect)) in cases.iter().enumerate() {
        let copy = tmp.path().join(format!("bad-{i}.zarr"));
        copy_dir(&good, &copy);
        mutate(&copy);
        // In process: a typed error, at open or at play.
        let err = match Replayer::open(&copy) {
            Err(e) => e,
            Ok(replay) => {
                let target = unique("rec-bad-target");
                let _rm = Remove(target.clone());
                let producer = replay
                    .configure(0, shm::Channel::new(&target))
                    .create()
                    .unwrap();
                let options = ReplayOptions::default();
                replay.play(vec![producer], &options).expect_err(what)
            }
        };
        let text = format!("{err}");
        assert!(text.contains(expect), "{what}: {text}");
        // The command: exit code 1 with the error, no panic.
        let target = unique("rec-bad-cli");
        let _rm = Remove(target.clone());
        let r = run({
            let mut c = labhub(Path::new("/nonexistent-home"));
            c.arg("replay")
                .arg(&copy)
                .args(["--as", &target, "--rate", "max", "--no-hub"]);
            c
        });
        assert_eq!(r.code, FAILURE, "{what}: {}", r.stderr);
        assert!(r.stderr.contains(expect), "{what}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
    }
}

/// CRC32C (Castagnoli), bit by bit: the shard index checksum, computed here independently.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_recorder_a_latest_viewer_and_a_bounded_job_share_one_channel_each_in_its_mode() {
    let broker = Broker::start();
    let hub = broker.hub();
    let name = unique("modes");
    let _rm = Remove(name.clone());
    let mut camera = hub
        .channel(&name)
        .policy(Policy::Ring {
            slots: 4,
            when_full: Backpressure::Block {
                timeout: Duration::from_secs(20),
            },
        })
        .frames::<u8>(&[64])
        .create()
        .unwrap();
    let (_tmp, path) = scratch();
    let out_path = path.to_str().unwrap();
    let mut rec = broker.labhub(&["record", &name, "--frames", "40", "--json", "-o", out_path]);
    let mut recorder = rec
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_for("the recorder attaches", || {
        assert!(
            recorder.try_wait().unwrap().is_none(),
            "the recorder exited"
        );
        camera.producer().report().consumers.len() == 1
    });
    // Neither of these reads while 40 frames go by: neither may hold the producer back.
    let mut viewer = hub
        .channel(&name)
        .delivery(DeliveryMode::Latest)
        .open()
        .unwrap();
    let job = hub
        .channel(&name)
        .delivery(DeliveryMode::Queue(2))
        .open()
        .unwrap();
    for i in 0..40u8 {
        camera.publish(&[i; 64], &[64]).unwrap();
    }
    let out = recorder.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))["channels"][0]["frames"],
        40
    );

    let frame = viewer.next(Some(WATCHDOG)).unwrap();
    assert_eq!(frame.frame_id(), 39, "the newest frame");
    assert!(
        frame.held().is_none(),
        "a latest viewer never reads a slot in place"
    );
    assert_eq!(frame.to_vec().unwrap(), [39; 64]);
    drop(frame);
    let r = run(broker.labhub(&["info", &name, "--sample", "0", "--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = json(&r.stdout);
    let consumers = v["segment"]["consumers"].as_array().unwrap();
    let by_mode = |m: &str| {
        consumers
            .iter()
            .find(|c| c["delivery"] == m)
            .unwrap_or_else(|| panic!("no {m} consumer in {consumers:?}"))
    };
    assert_eq!(by_mode("latest")["dropped"], 39);
    assert_eq!(by_mode("latest")["lag"], 0);
    assert_eq!(by_mode("queue:2")["lag"], 40, "it never read");
    assert_eq!(
        by_mode("queue:2")["position"],
        u64::MAX,
        "it holds nothing back"
    );
    let text = run(broker.labhub(&["info", &name, "--sample", "0"]));
    assert!(
        text.stdout
            .contains("latest, lag 0, received 1, missed 0, dropped 39"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("queue:2, lag 40"), "{}", text.stdout);
    drop(job);

    // watch in a decimating mode counts what it skips.
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = camera.publish(&[1; 64], &[64]);
                std::thread::sleep(Duration::from_millis(1));
            }
            camera
        })
    };
    let r = run(broker.labhub(&[
        "watch",
        &name,
        "--mode",
        "every:4",
        "--count",
        "3",
        "--interval",
        "200ms",
        "--json",
    ]));
    stop.store(true, Ordering::Relaxed);
    drop(feeder.join().unwrap());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<Value> = r.stdout.lines().map(json).collect();
    let summary = lines.last().unwrap();
    assert_eq!(summary["mode"], "every:4");
    assert!(summary["frames"].as_u64().unwrap() > 0, "{summary}");
    assert!(
        summary["skipped"].as_u64().unwrap() >= summary["frames"].as_u64().unwrap(),
        "{summary}"
    );
    drop(viewer);
    hub.shutdown();
}

#[test]
fn a_recording_never_writes_into_a_path_that_exists() {
    let (_tmp, path) = scratch();
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("notes.txt"), "yesterday's").unwrap();
    let r = run({
        let mut c = labhub(Path::new("/nonexistent-home"));
        c.args(["record", "cam0", "--no-hub", "-o"]).arg(&path);
        c
    });
    assert_eq!(r.code, FAILURE, "{}", r.stderr);
    assert!(r.stderr.contains("exists already"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(path.join("notes.txt")).unwrap(),
        "yesterday's"
    );
    assert_eq!(
        std::fs::read_dir(&path).unwrap().count(),
        1,
        "nothing added"
    );
}

#[test]
fn a_looped_replay_ends_with_the_error_of_a_channel_that_fails() {
    let (a, b) = (unique("rec-loop-a"), unique("rec-loop-b"));
    let (a2, b2) = (unique("rec-loop-a2"), unique("rec-loop-b2"));
    let _rm = (
        Remove(a.clone()),
        Remove(b.clone()),
        Remove(a2.clone()),
        Remove(b2.clone()),
    );
    let (_tmp, path) = scratch();
    let mut cams: Vec<_> = [&a, &b]
        .iter()
        .map(|n| {
            shm::Channel::new(n)
                .policy(Policy::ring(16))
                .frames::<u8>(&[64])
                .create()
                .unwrap()
        })
        .collect();
    // Two frames per shard: channel a's second shard can be damaged alone.
    let options = RecordOptions {
        max_frames: Some(6),
        shard_bytes: 128,
        ..RecordOptions::default()
    };
    let mut recorder = Recorder::create(&path, options).unwrap();
    for n in [&a, &b] {
        recorder.add(shm::Channel::new(n).open().unwrap()).unwrap();
    }
    let recording = std::thread::spawn(move || recorder.run(|_| {}));
    for i in 0..6u8 {
        for cam in &mut cams {
            cam.publish(&[i; 64], &[64]).unwrap();
        }
    }
    recording.join().unwrap().unwrap();
    let shard = path.join(&a).join("frames/c/1/0");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[3] ^= 0xff;
    std::fs::write(&shard, bytes).unwrap();

    // Channel b alone would loop until stopped; a's error must end the whole replay.
    let mut child = labhub(Path::new("/nonexistent-home"))
        .arg("replay")
        .arg(&path)
        .args(["--as", &format!("{a}={a2}"), "--as", &format!("{b}={b2}")])
        .args(["--rate", "max", "--loop", "--no-hub"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WATCHDOG;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("watchdog: the looped replay did not end with its failing channel");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(FAILURE), "{stderr}");
    assert!(stderr.contains("CRC32C"), "{stderr}");
}
