"""Message channels through a real `labhub hub`: pub/sub and request/reply in bytes and JSON
across processes, CurveZMQ against keyless peers (plain pyzmq), errors, timeouts, Ctrl-C,
and bad arguments."""

import json
import signal
import threading
import time

import pytest
import zmq

import labhub

from conftest import WATCHDOG

HUB = "import sys, labhub\nhub = labhub.Hub(sys.argv[1], endpoint=sys.argv[2], notify_endpoint=sys.argv[3])\n"


def hub_args(hub_process, name):
    return (hub_process.home, hub_process.endpoint, hub_process.notify_endpoint, name)


SUBSCRIBER = HUB + r"""
import json
sub = hub.open_subscriber(sys.argv[4], topics=["temps", "cmd"])
print("subscribed", flush=True)
for i in range(3):
    m = sub.recv(timeout=30)
    print("got", m.topic.decode(), m.payload.decode(), flush=True)
print("json", json.dumps(sub.recv_json(timeout=30)), flush=True)
"""


def test_pubsub_bytes_and_json_reach_a_subscriber_in_another_process(hub_process, name, spawn):
    with hub_process.client() as hub:
        pub = hub.create_publisher(name)
        assert pub.endpoint.startswith("tcp://127.0.0.1:")
        child = spawn(SUBSCRIBER, *hub_args(hub_process, name))
        child.expect("subscribed")
        assert pub.wait_for_subscribers(2, timeout=WATCHDOG) >= 2
        pub.send("other", b"not subscribed")
        pub.send("temps", b"4.2 K")
        pub.send(b"cmd", "start")
        pub.send("temps", bytearray(b"4.3 K"))
        pub.send_json("temps", {"cryostat": 4.2, "ok": True})
        child.expect("got temps 4.2 K")
        child.expect("got cmd start")
        child.expect("got temps 4.3 K")
        line = child.expect("json ")
        assert json.loads(line[5:]) == {"cryostat": 4.2, "ok": True}
        assert child.wait() == 0
        listed = hub_process.cli("ls", "--json")
        assert name in listed


def test_a_keyless_pyzmq_subscriber_reads_nothing_of_a_hub_channel(hub_process, name):
    with hub_process.client() as hub:
        pub = hub.create_publisher(name)
        ctx = zmq.Context()
        try:
            plain = ctx.socket(zmq.SUB)
            plain.setsockopt(zmq.SUBSCRIBE, b"")
            plain.setsockopt(zmq.LINGER, 0)
            plain.connect(pub.endpoint)
            sub = hub.open_subscriber(name)
            pub.wait_for_subscribers(1, timeout=WATCHDOG)
            for i in range(20):
                pub.send("t", f"secret {i}")
            # The admitted subscriber has them all; the plain one, connected first, nothing.
            assert [sub.recv(timeout=WATCHDOG).text for _ in range(20)] == [
                f"secret {i}" for i in range(20)]
            assert plain.poll(300) == 0
            assert pub.subscriptions == 1
        finally:
            ctx.destroy(linger=0)


SERVER = HUB + r"""
def handler(request):
    if request == b"fail":
        raise RuntimeError("the stage is not homed")
    if request == b"text":
        return "text reply"
    return request.upper()
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background parent may ignore it
srv = hub.create_server(sys.argv[4], handler)
print("serving", srv.endpoint, flush=True)
try:
    srv.serve()
except KeyboardInterrupt:
    print("stopped by Ctrl-C", flush=True)
"""


def test_request_reply_across_processes_with_a_handler_that_may_raise(hub_process, name, spawn):
    child = spawn(SERVER, *hub_args(hub_process, name))
    child.expect("serving")
    with hub_process.client() as hub:
        client = hub.open_client(name)
        assert client.request(b"ping") == b"PING"
        assert client.request("text") == b"text reply"
        with pytest.raises(labhub.RemoteError) as err:
            client.request(b"fail")
        assert err.value.remote_message == "RuntimeError: the stage is not homed"
        assert isinstance(err.value, labhub.MsgError)
        # The server and the client go on after the failure.
        assert client.request(b"again", timeout=WATCHDOG) == b"AGAIN"
        client.close()
        with pytest.raises(labhub.ClosedError):
            client.request(b"x")
    child.proc.send_signal(signal.SIGINT)
    child.expect("stopped by Ctrl-C")
    assert child.wait() == 0


def test_a_json_server_in_a_thread_answers_and_stops_when_closed(hub_process, name):
    with hub_process.client() as hub:
        srv = hub.create_server(name, lambda q: {"sum": sum(q["values"])}, json=True)
        served = []
        t = threading.Thread(target=lambda: served.append(srv.serve()))
        t.start()
        client = hub.open_client(name)
        assert client.request_json({"values": [1, 2, 3.5]}) == {"sum": 6.5}
        with pytest.raises(labhub.RemoteError) as err:
            client.request(b"not json")
        assert err.value.remote_message.startswith("JSONDecodeError")
        srv.close()
        t.join(WATCHDOG)
        assert not t.is_alive()
        assert served == [2]


def test_a_request_nobody_answers_times_out_and_the_client_stays_usable(hub_process, name):
    with hub_process.client() as hub:
        srv = hub.create_server(name, lambda q: b"late " + q)
        client = hub.open_client(name)
        with pytest.raises(labhub.TimeoutError) as err:
            client.request(b"first", timeout=0.3)
        assert isinstance(err.value, TimeoutError)
        # The late request is answered now; its reply is discarded, the next one matches.
        t = threading.Thread(target=lambda: [srv.serve_one(timeout=WATCHDOG) for _ in range(2)])
        t.start()
        assert client.request(b"second", timeout=WATCHDOG) == b"late second"
        t.join(WATCHDOG)


def test_a_hub_serves_a_message_channel_once_at_a_time(hub_process, name):
    with hub_process.client() as hub:
        pub = hub.create_publisher(name)
        with pytest.raises(labhub.ChannelBusy) as busy:
            hub.create_publisher(name)
        assert busy.value.channel == name and "already served by this hub" in str(busy.value)
        with pytest.raises(labhub.ChannelBusy):
            hub.create_server(name, lambda request: request)
        pub.close()
        hub.create_publisher(name).close()   # free again once closed


def test_receiving_nothing_is_a_timeout_error(hub_process, name):
    with hub_process.client() as hub:
        pub = hub.create_publisher(name)   # kept: dropping it unregisters the channel
        sub = hub.open_subscriber(name, "x")
        start = time.monotonic()
        with pytest.raises(labhub.TimeoutError):
            sub.recv(timeout=0.2)
        assert time.monotonic() - start >= 0.2
        pub.close()


RECV_WAITING = HUB + r"""
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background parent may ignore it
sub = hub.open_subscriber(sys.argv[4])
try:
    # Inside the try: the parent's SIGINT may come as soon as the line is out.
    print("waiting", flush=True)
    sub.recv()
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_ctrl_c_interrupts_a_subscriber_waiting_forever(hub_process, name, spawn):
    with hub_process.client() as hub:
        pub = hub.create_publisher(name)
        child = spawn(RECV_WAITING, *hub_args(hub_process, name))
        child.expect("waiting")
        pub.wait_for_subscribers(1, timeout=WATCHDOG)
        child.proc.send_signal(signal.SIGINT)
        child.expect("interrupted")
        assert child.wait() == 0


def test_a_huge_message_is_refused_and_the_subscriber_goes_on(hub_process, name):
    with hub_process.client() as hub:
        pub = hub.create_publisher(name)
        sub = hub.open_subscriber(name, max_message_size=1024)
        pub.wait_for_subscribers(1, timeout=WATCHDOG)
        pub.send("t", b"x" * 2048)
        with pytest.raises(labhub.MsgError):
            sub.recv(timeout=WATCHDOG)


def test_wrong_names_kinds_and_arguments_are_typed_errors(hub_process, name):
    with hub_process.client() as hub:
        with pytest.raises(labhub.ChannelNotFound):
            hub.open_subscriber(name + "-none")
        with pytest.raises(labhub.ChannelNotFound):
            hub.open_client(name + "-none")
        rr = hub.create_server(name + "-rr", lambda q: q)  # noqa: F841 (kept registered)
        with pytest.raises(labhub.SchemaMismatch):
            hub.open_subscriber(name + "-rr")
        pub = hub.create_publisher(name)
        with hub_process.client() as other, pytest.raises(labhub.ChannelBusy):
            other.create_publisher(name)
        with pytest.raises(TypeError, match="topics"):
            hub.open_subscriber(name, topics=5)
        with pytest.raises(ValueError, match="topics"):
            hub.open_subscriber(name, topics=[])
        with pytest.raises(ValueError, match="hwm"):
            hub.open_subscriber(name, hwm=0)
        with pytest.raises(TypeError, match="max_message_size"):
            hub.open_subscriber(name, max_message_size="big")
        with pytest.raises(TypeError, match="payload"):
            pub.send("t", 17)
        with pytest.raises(TypeError, match="bind"):
            hub.create_publisher(name + "-b", bind=5)
        with pytest.raises(ValueError, match="bind"):
            hub.create_publisher(name + "-b", bind="udp://127.0.0.1:5")
        with pytest.raises(TypeError, match="handler"):
            hub.create_server(name + "-h", handler=42)
        with pytest.raises(ValueError, match="name"):
            hub.create_publisher("no spaces allowed")
        with pytest.raises(ValueError, match="timeout"):
            pub.wait_for_subscribers(1, timeout=-1)
        pub.close()
        with pytest.raises(labhub.ClosedError):
            pub.send("t", b"")


def test_a_handler_may_close_its_own_server_and_closed_never_waits(hub_process, name):
    with hub_process.client() as hub:
        srv = hub.create_server(name, lambda q: (srv.close(), b"bye")[1])
        serving = threading.Thread(target=srv.serve)
        serving.start()
        client = hub.open_client(name)
        assert srv.closed is False       # answered while serve() holds the channel
        assert repr(srv).startswith("<labhub.ReqServer")
        assert client.request(b"x", timeout=WATCHDOG) == b"bye"
        serving.join(WATCHDOG)
        assert not serving.is_alive(), "serve() ended once its handler closed the server"
        assert srv.closed
