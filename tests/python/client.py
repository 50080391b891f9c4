#!/usr/bin/env python3
"""A labhub broker client written from docs/PROTOCOL.md alone, with pyzmq.

Usage:
  client.py keygen
      prints a CURVE key pair: "<public z85> <secret z85>"
  client.py run ENDPOINT NOTIFY_ENDPOINT BROKER_PUBLIC CLIENT_PUBLIC CLIENT_SECRET CHANNEL
      registers CHANNEL (pubsub), discovers it over DEALER and over REQ, checks error replies
      and the channel_up notification, and prints one "ok <step>" line per step.
  client.py consume ENDPOINT BROKER_PUBLIC CLIENT_PUBLIC CLIENT_SECRET CHANNEL
      gets memfd channel CHANNEL's segment from the broker (a grant, then the ticket on the
      grant socket, §9), maps it as docs/SHM_LAYOUT.md says, checks its headers, reads the
      newest frame's id, and checks that the data cannot be mapped writable.
Exits non-zero with a message on the first failure.
"""
import json
import mmap
import os
import socket
import struct
import sys

import zmq

TIMEOUT_MS = 20000


def curve(sock, broker_public, client_public, client_secret):
    sock.curve_serverkey = broker_public.encode()
    sock.curve_publickey = client_public.encode()
    sock.curve_secretkey = client_secret.encode()
    sock.linger = 0


def request(sock, kind, body):
    """Sends one request (§2: tag, version, type, JSON body) and returns the reply body."""
    sock.send_multipart([b"labhub", b"1", kind.encode(), json.dumps(body).encode()])
    if not sock.poll(TIMEOUT_MS):
        raise SystemExit(f"no reply to {kind} within {TIMEOUT_MS} ms")
    frames = sock.recv_multipart()
    if len(frames) != 4 or frames[0] != b"labhub" or frames[1] != b"1" or frames[2] != b"reply":
        raise SystemExit(f"unexpected reply frames: {frames!r}")
    reply = json.loads(frames[3])
    # §3: check the structure and status before reading anything else.
    if not isinstance(reply, dict) or "status" not in reply or "error_code" not in reply:
        raise SystemExit(f"malformed reply: {reply!r}")
    if reply.get("request_id") != body.get("request_id"):
        raise SystemExit(f"reply to another request: {reply!r}")
    return reply


def expect(cond, what):
    if not cond:
        raise SystemExit(f"failed: {what}")
    print(f"ok {what}", flush=True)


def run(endpoint, notify, broker_public, client_public, client_secret, channel):
    ctx = zmq.Context()

    sub = ctx.socket(zmq.SUB)
    curve(sub, broker_public, client_public, client_secret)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(notify)

    dealer = ctx.socket(zmq.DEALER)
    curve(dealer, broker_public, client_public, client_secret)
    dealer.connect(endpoint)

    # A heartbeat from a client the broker does not know: unknown_client (§3 heartbeat).
    r = request(dealer, "heartbeat", {"request_id": 1, "client": "py-client"})
    expect(r["status"] == "error" and r["error_code"] == "unknown_client", "unknown_client")

    # The subscription may reach the broker after the first publications (PUB/SUB drops
    # them): register under throwaway names until a notification arrives.
    for i in range(200):
        r = request(dealer, "register", {"request_id": 100 + i, "client": "py-sync", "channel": {
            "name": f"{channel}-sync{i}", "kind": "pubsub", "endpoint": "tcp://127.0.0.1:9"}})
        if sub.poll(100):
            sub.recv_multipart()
            break
    else:
        raise SystemExit("no notification ever arrived")
    while sub.poll(200):
        sub.recv_multipart()

    r = request(dealer, "register", {"request_id": 2, "client": "py-client", "pid": 1, "channel": {
        "name": channel, "kind": "pubsub", "endpoint": "tcp://127.0.0.1:6123",
        "policy": "latest", "schema": {"name": "float64", "version": 1},
        "metadata": {"unit": "kelvin", "sensors": [1, 2]}}})
    expect(r["status"] == "ok" and r["error_code"] == "none", "register")
    expect(isinstance(r["heartbeat_interval_ms"], int) and r["heartbeat_interval_ms"] > 0,
           "heartbeat terms")

    if not sub.poll(TIMEOUT_MS):
        raise SystemExit("no channel_up notification")
    frames = sub.recv_multipart()
    note = json.loads(frames[3])
    expect(frames[:3] == [b"labhub", b"1", b"channel_up"] and note["channel"]["name"] == channel
           and isinstance(note["seq"], int), "channel_up notification")

    r = request(dealer, "heartbeat", {"request_id": 3, "client": "py-client",
                                      "channels": {channel: {"samples": 42}}})
    expect(r["status"] == "ok", "heartbeat")

    r = request(dealer, "discover", {"request_id": 4, "name": channel})
    ch = r.get("channel", {})
    expect(r["status"] == "ok" and ch["endpoint"] == "tcp://127.0.0.1:6123"
           and ch["kind"] == "pubsub" and ch["producer"] == "py-client"
           and ch["state"] == "up" and ch["metadata"]["unit"] == "kelvin"
           and ch["counters"]["samples"] == 42, "discover over DEALER")

    # A REQ socket adds the empty delimiter itself; the broker echoes it (§2).
    req = ctx.socket(zmq.REQ)
    curve(req, broker_public, client_public, client_secret)
    req.connect(endpoint)
    r = request(req, "discover", {"request_id": 5, "name": channel})
    expect(r["status"] == "ok" and r["channel"]["name"] == channel, "discover over REQ")

    r = request(dealer, "discover", {"request_id": 6, "name": channel + "-missing"})
    expect(r["status"] == "error" and r["error_code"] == "not_found" and r["message"], "not_found")

    r = request(dealer, "register", {"request_id": 7, "client": "py-client", "channel": {
        "name": channel + "-bad", "kind": "pubsub", "endpoint": "tcp://0.0.0.0:5000"}})
    expect(r["status"] == "error" and r["error_code"] == "invalid_field", "undialable endpoint refused")

    r = request(dealer, "list", {"request_id": 8, "prefix": channel, "kind": "pubsub"})
    names = [c["name"] for c in r["channels"]]
    expect(r["status"] == "ok" and channel in names, "list")

    r = request(dealer, "unregister", {"request_id": 9, "client": "py-client", "name": channel})
    expect(r["status"] == "ok", "unregister")
    r = request(dealer, "discover", {"request_id": 10, "name": channel})
    expect(r["error_code"] == "not_found", "gone after unregister")
    ctx.destroy(linger=0)


def consume(endpoint, broker_public, client_public, client_secret, channel):
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    curve(dealer, broker_public, client_public, client_secret)
    dealer.connect(endpoint)

    # §3 grant: a ticket for the grant socket.
    r = request(dealer, "grant", {"request_id": 1, "client": "py-consumer", "name": channel,
                                  "role": "consume"})
    expect(r["status"] == "ok" and len(r["grant"]["ticket"]) == 64, "grant")
    grant = r["grant"]

    # §9.2: redeem it on the SOCK_SEQPACKET grant socket; the answer carries the descriptors.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(TIMEOUT_MS / 1000)
    s.connect(grant["socket"])
    s.send(json.dumps({"type": "redeem", "ticket": grant["ticket"], "name": channel,
                       "role": "consume"}).encode())
    msg, fds, _, _ = socket.recv_fds(s, 4096, 2)
    answer = json.loads(msg)
    expect(answer["status"] == "ok" and answer["descriptors"] == 2 and len(fds) == 2,
           "two descriptors")
    control_fd, data_fd = fds

    # docs/SHM_LAYOUT.md: the data region read-only, the control region read-write.
    data = mmap.mmap(data_fd, os.fstat(data_fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ)
    control = mmap.mmap(control_fd, os.fstat(control_fd).st_size, mmap.MAP_SHARED)
    magic, version = struct.unpack_from("<QI", data, 0)
    cmagic, cversion = struct.unpack_from("<QI", control, 0)
    expect(magic == 0x424442554842414C and version == 7, "data header")
    expect(cmagic == 0x544342554842414C and cversion == 7, "control header")
    instance, = struct.unpack_from("<Q", data, 176)
    cinstance, = struct.unpack_from("<Q", control, 40)
    expect(instance != 0 and instance == cinstance, "one incarnation")
    total_size, = struct.unpack_from("<Q", data, 16)
    expect(total_size == os.fstat(data_fd).st_size, "total_size")
    commit, = struct.unpack_from("<Q", data, 320)
    expect(commit > 0, "frames committed")
    # The newest frame's descriptor: slot (commit - 1) mod N, its seq says it is committed.
    slots, = struct.unpack_from("<I", data, 32)
    last = commit - 1
    seq, frame_id = struct.unpack_from("<QQ", data, 512 + 128 * (last % slots))
    expect(seq == 2 * last + 2 and frame_id == last, "newest descriptor")

    # The seals: reopened read-write through /proc, the data still cannot be mapped writable.
    rw = os.open(f"/proc/self/fd/{data_fd}", os.O_RDWR)
    try:
        mmap.mmap(rw, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        raise SystemExit("a writable mapping of the data was allowed")
    except PermissionError:
        expect(True, "no writable mapping")
    try:
        os.write(rw, b"x")
        raise SystemExit("a write to the data was allowed")
    except PermissionError:
        expect(True, "no write")
    ctx.destroy(linger=0)


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "keygen":
        public, secret = zmq.curve_keypair()
        print(public.decode(), secret.decode())
    elif len(sys.argv) == 8 and sys.argv[1] == "run":
        run(*sys.argv[2:])
        print("done", flush=True)
    elif len(sys.argv) == 7 and sys.argv[1] == "consume":
        consume(*sys.argv[2:])
        print("done", flush=True)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
