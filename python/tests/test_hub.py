"""Channels through a real `labhub hub`: registration, discovery, notices, the CLI's view of
Python channels, and no broker at all."""

import json
import socket
import time

import numpy as np
import pytest

import labhub

from conftest import WATCHDOG


def wait_notice(hub, kind, channel):
    deadline = time.monotonic() + WATCHDOG
    while time.monotonic() < deadline:
        n = hub.notice(timeout=0.5)
        if n and n["kind"] == kind and n["channel"] == channel:
            return n
    pytest.fail(f"watchdog: no {kind} notice for {channel}")


def test_frames_through_the_hub_and_the_cli_sees_the_python_channel(hub_process, name):
    with hub_process.client() as hub, hub_process.client() as other:
        cam = hub.create_producer(name, dtype=np.uint16, shape=(32, 48), policy="ring:8:block")
        viewer = other.open_consumer(name, dtype=np.uint16)
        assert viewer.shape == (32, 48)
        with cam.loan() as frame:
            frame.array[:] = 1234
        for frame in viewer:
            with frame:
                assert frame.array.mean() == 1234 and frame.frame_id == 0
            break
        listing = json.loads(hub_process.cli("ls", "--json"))
        channels = listing if isinstance(listing, list) else listing.get("channels", listing)
        assert name in json.dumps(channels)
        info = hub_process.cli("info", name, "--json", "--sample", "0")
        assert "u16" in info and "48" in info
        cam.publish(np.zeros((32, 48), dtype=np.uint16))
        watch = hub_process.cli("watch", name, "--count", "1", "--interval", "100ms", "--json")
        assert watch.strip(), "watch printed a sample"


def wait_subscribed(hub, watcher, name):
    """Waits until `watcher` receives notices (a subscription connects in the background):
    probe channels are registered until the watcher sees one come up (a channel made through
    the Hub is broker-held memory, freed with its last holder, so nothing is left to remove)."""
    deadline = time.monotonic() + WATCHDOG
    k = 0
    while time.monotonic() < deadline:
        probe = f"{name[:100]}-probe{k}"
        k += 1
        with hub.create_producer(probe, dtype=np.uint8, shape=(1,)):
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                n = watcher.notice(timeout=0.05)
                if n and n["kind"] == "channel_up" and n["channel"] == probe:
                    return
    pytest.fail("watchdog: the watcher never received a notice")


def test_notices_tell_channel_up_and_channel_down(hub_process, name):
    with hub_process.client() as hub, hub_process.client() as watcher:
        wait_subscribed(hub, watcher, name)
        cam = hub.create_producer(name, dtype=np.float32, shape=(4,))
        up = wait_notice(watcher, "channel_up", name)
        assert up["info"]["name"] == name and up["info"]["kind"] == "shm"
        cam.close()
        down = wait_notice(watcher, "channel_down", name)
        assert down["reason"]


def test_a_hub_consumer_of_an_unknown_channel_is_channel_not_found(hub_process, name):
    with hub_process.client() as hub:
        with pytest.raises(labhub.ChannelNotFound):
            hub.open_consumer(name)
        cam = hub.create_producer(name, dtype=np.uint8, shape=(4,))
        with pytest.raises(labhub.SchemaMismatch):
            hub.open_consumer(name, dtype=np.int64)
        cam.close()


def test_a_consumer_may_start_before_its_producer(hub_process, name):
    # The consumer attaches to the broker-held segment once the producer has registered it:
    # frames published before that are not its, so the producer publishes until one arrives.
    with hub_process.client() as hub:
        viewer = hub.open_consumer(name, dtype=np.uint8, shape=(8,), policy="ring:4:drop",
                                   create=True)
        with pytest.raises(labhub.TimeoutError):
            viewer.next(0.05)
        cam = hub.create_producer(name, dtype=np.uint8, shape=(8,), policy="ring:4:drop")
        deadline = time.monotonic() + WATCHDOG
        while True:
            cam.publish(np.arange(8, dtype=np.uint8))
            try:
                with viewer.next(0.02) as f:
                    assert list(f.array) == list(range(8))
                    break
            except labhub.TimeoutError:
                assert time.monotonic() < deadline, "watchdog: the consumer never attached"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_broker_is_a_timeout_error(hub_process, name):
    port = free_port()
    with labhub.Hub(str(hub_process.home), endpoint=f"tcp://127.0.0.1:{port}",
                    notify_endpoint=f"tcp://127.0.0.1:{free_port()}",
                    request_timeout=0.3) as hub:
        with pytest.raises(labhub.TimeoutError) as err:
            hub.create_producer(name, dtype=np.uint8, shape=(4,))
        assert isinstance(err.value, TimeoutError)
        with pytest.raises(TimeoutError):
            hub.open_consumer(name)


def test_bad_hub_arguments(tmp_path):
    with pytest.raises(labhub.ConfigError):
        labhub.Hub(str(tmp_path / "no-home"))
    with pytest.raises(ValueError, match="server_key"):
        labhub.Hub(str(tmp_path), endpoint="tcp://127.0.0.1:1", server_key="short")
    with pytest.raises(ValueError, match="request_timeout"):
        labhub.Hub(str(tmp_path), request_timeout=-1)
