"""A channel bridged between two real hubs on this machine (`labhub hub` twice, each with its
own home and ports; `labhub gateway` on the receiving one, `labhub bridge` on the source),
read from Python on the receiving hub as CHANNEL@HUB, with the source's frame ids."""

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import WATCHDOG, binary, start_hub


def private(path: Path, text: str) -> None:
    path.write_text(text)
    os.chmod(path, 0o600)


@pytest.fixture
def two_hubs():
    homes = [Path(tempfile.mkdtemp(prefix="labhub-py-bridge-")) for _ in range(2)]
    for h in homes:
        os.chmod(h, 0o700)
    acq_home, ws_home = homes
    acq = start_hub(acq_home)
    # The source's client key (made on first use) must be admitted by the receiving hub.
    with acq.client():
        pass
    private(ws_home / "allowed_clients", (acq_home / "keys" / "client.pub").read_text())
    private(ws_home / "broker.toml", 'name = "ws"\n')
    ws = start_hub(ws_home)
    private(acq_home / "broker.toml",
            f'name = "acq"\n\n[[peer]]\nname = "ws"\nendpoint = "{ws.endpoint}"\n'
            f'public_key = "{ws.public_key}"\n')
    yield acq, ws
    for hub in (acq, ws):
        hub.proc.kill()
        hub.proc.wait()
    for h in homes:
        shutil.rmtree(h, ignore_errors=True)


def test_a_bridged_channel_is_read_as_channel_at_hub_with_the_source_frame_ids(
        two_hubs, spawn, name):
    acq, ws = two_hubs
    gateway = spawn([binary("labhub"), "gateway", "--listen", "tcp://127.0.0.1:0", "--json",
                     "--home", ws.home, "--broker", ws.endpoint])
    assert "listening" in json.loads(gateway.expect("{"))
    with acq.client() as source, ws.client() as remote:
        cam = source.create_producer(name, dtype=np.uint16, shape=(16, 16),
                                     policy="ring:16:block:30s")
        # Ids that a bridge started later does not see from the start.
        for _ in range(3):
            cam.publish(np.zeros((16, 16), dtype=np.uint16))
        spawn([binary("labhub"), "bridge", name, "--to", "ws", "--home", acq.home,
               "--broker", acq.endpoint])
        deadline = time.monotonic() + WATCHDOG
        viewer = None
        while viewer is None:
            try:
                viewer = remote.open_consumer(f"{name}@acq", dtype=np.uint16)
            except Exception:
                assert time.monotonic() < deadline, "the bridged channel never came up"
                time.sleep(0.05)
        assert viewer.shape == (16, 16)
        for i in range(3, 13):
            cam.publish(np.full((16, 16), i, dtype=np.uint16))
            frame = viewer.next(timeout=WATCHDOG)
            with frame:
                assert frame.origin_id == i, "the source's frame id"
                assert int(frame.array.mean()) == i
        listing = json.loads(ws.cli("ls", "--json", "--sample", "0"))
        row = next(c for c in listing["channels"] if c["name"] == name)
        assert row["metadata"]["bridged_from"] == f"{name}@acq"
