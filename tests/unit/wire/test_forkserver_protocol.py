"""What a host and its fork server say (``_wire/_forkserver_protocol.py``), on a real socket pair.

The client and the server are tested end to end in
tests/unit/pool/launch/test_forkserver_client.py and
tests/integration/test_forkserver.py; here the packets, their sizes and the
file descriptors that travel with them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from snakepit._wire import _forkserver_protocol as protocol


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected SOCK_SEQPACKET pair, as the host and its fork server have."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        yield a, b


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


class TestEncoding:
    def test_a_message_round_trips(self) -> None:
        message = {"op": protocol.SPAWN, "id": 3, "argv": ["--adapter", "m:C"], "env": {"A": "é"}}
        assert protocol.decode(protocol.encode(message)) == message

    @pytest.mark.parametrize("data", [b"[1, 2]", b'"spawn"', b"3"])
    def test_a_packet_that_is_no_object_is_refused(self, data: bytes) -> None:
        with pytest.raises(ValueError, match=r"^not a message: "):
            protocol.decode(data)

    @pytest.mark.parametrize(
        ("data", "error"),
        [(b"{", "Expecting property name"), (b"\xff", "can't decode"), (b"", "Expecting value")],
    )
    def test_a_packet_that_is_no_json_is_a_value_error(self, data: bytes, error: str) -> None:
        with pytest.raises(ValueError, match=error):  # json's, or a UnicodeDecodeError
            protocol.decode(data)


class TestSendReceive:
    def test_a_packet_and_its_fds_arrive_close_on_exec(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        a, b = pair
        r, w = os.pipe()
        os.set_inheritable(r, True)
        try:
            protocol.send(a, protocol.encode({"op": protocol.READY}), [r, w])
            received = protocol.receive(b, protocol.MAX_REPLY, 4)
        finally:
            protocol.close_fds([r, w])  # the sender's copies stay its own
        assert received is not None
        data, fds = received
        try:
            assert protocol.decode(data) == {"op": protocol.READY}
            assert len(fds) == 2
            assert not any(os.get_inheritable(fd) for fd in fds)
            os.write(fds[1], b"through")
            assert os.read(fds[0], 16) == b"through"
        finally:
            protocol.close_fds(fds)

    def test_nothing_waiting_is_none(self, pair: tuple[socket.socket, socket.socket]) -> None:
        _, b = pair
        b.setblocking(False)
        assert protocol.receive(b, protocol.MAX_REPLY, 1) is None

    def test_the_end_of_the_stream_is_an_empty_packet(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        a, b = pair
        a.close()
        assert protocol.receive(b, protocol.MAX_REPLY, 1) == (b"", [])

    def test_fds_past_the_most_expected_are_not_left_open(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        a, b = pair
        r, w = os.pipe()
        before = open_fds()
        try:
            protocol.send(a, b'{"op": "x"}', [r, w, r, w, r, w])
            received = protocol.receive(b, protocol.MAX_REPLY, 4)
            assert received is not None
            assert len(received[1]) == 4  # the rest never became fds of ours
            protocol.close_fds(received[1])
            assert open_fds() == before
        finally:
            protocol.close_fds([r, w])

    def test_fds_with_an_empty_packet_are_closed(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        a, b = pair
        r, w = os.pipe()
        before = open_fds()
        try:
            socket.send_fds(a, [b""], [r, w])  # what a broken peer could send
            assert protocol.receive(b, protocol.MAX_REPLY, 4) == (b"", [])
            assert open_fds() == before
        finally:
            protocol.close_fds([r, w])

    def test_send_to_a_full_socket_is_blocking_io_and_sends_nothing(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        a, b = pair
        a.setblocking(False)
        b.setblocking(False)
        packet = b"x" * 4096
        sent = 0
        while True:
            try:
                protocol.send(a, packet)
            except BlockingIOError:
                break
            sent += 1
        assert sent > 0
        received = 0
        while protocol.receive(b, len(packet), 0) is not None:
            received += 1
        assert received == sent

    def test_close_fds_skips_one_already_closed(self) -> None:
        r, w = os.pipe()
        os.close(r)
        protocol.close_fds([r, w])
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(w)


class TestSizes:
    def test_the_send_buffer_holds_a_full_request_where_the_kernel_allows(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        # Before: the default buffer (~208 KiB) capped a request far below
        # MAX_REQUEST, and a larger one failed with EMSGSIZE.
        a, b = pair
        largest = protocol.fit_send_buffer(a)
        assert 0 < largest <= protocol.MAX_REQUEST
        with open("/proc/sys/net/core/wmem_max") as f:
            ceiling = 2 * int(f.read())  # what the kernel lets a user ask for
        expected = min(protocol.MAX_REQUEST, ceiling - protocol.SEND_OVERHEAD)
        assert largest >= expected
        protocol.send(a, b"x" * largest)  # it fits whole
        received = protocol.receive(b, protocol.MAX_REQUEST, 4)
        assert received is not None
        assert len(received[0]) == largest

    def test_a_packet_past_the_buffer_is_message_too_long(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        a, _ = pair
        largest = protocol.fit_send_buffer(a, 1024)
        assert largest == 1024  # no more than asked for
        buffer = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        with pytest.raises(OSError, match="Message too long"):
            protocol.send(a, b"x" * buffer)

    def test_a_request_is_read_whole_up_to_max_request(
        self, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        a, b = pair
        if protocol.fit_send_buffer(a) < protocol.MAX_REQUEST:
            pytest.skip("net.core.wmem_max is below MAX_REQUEST here")
        message = {"op": protocol.SPAWN, "env": {"V": ""}}
        data = protocol.encode(message)
        message["env"] = {"V": "x" * (protocol.MAX_REQUEST - len(data))}
        data = protocol.encode(message)
        assert len(data) == protocol.MAX_REQUEST
        protocol.send(a, data)
        received = protocol.receive(b, protocol.MAX_REQUEST, 4)
        assert received is not None
        assert protocol.decode(received[0]) == message
