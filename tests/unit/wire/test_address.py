"""The one reader of worker addresses (``snakepit._wire._address``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from snakepit._wire._address import Address, AddressError, frames_path, grpc_target, unix_path
from snakepit.pool._launch._process import _unexpected_address
from snakepit.worker._adapter_server import AdapterStartError, parse_listen


class TestParse:
    def test_a_unix_address_keeps_its_absolute_path(self) -> None:
        address = Address.parse("unix:/run/w.sock")
        assert address == Address("unix", path="/run/w.sock")
        assert str(address) == "unix:/run/w.sock"
        assert address.target == "unix:/run/w.sock"

    def test_a_relative_unix_path_is_under_the_given_directory(self) -> None:
        assert Address.parse("unix:w.sock", cwd="/cwd").path == "/cwd/w.sock"

    def test_a_relative_unix_path_is_under_the_current_directory_by_default(self) -> None:
        assert Address.parse("unix:w.sock").path == str(Path.cwd() / "w.sock")

    def test_a_unix_path_is_normalised(self) -> None:
        assert str(Address.parse("unix:/run//a/./w.sock")) == "unix:/run/a/w.sock"

    def test_a_tcp_address_has_a_host_and_a_port(self) -> None:
        address = Address.parse("tcp:127.0.0.1:0")
        assert address == Address("tcp", host="127.0.0.1", port=0)
        assert str(address) == "tcp:127.0.0.1:0"
        assert address.target == "127.0.0.1:0"

    def test_an_ipv6_host_keeps_its_brackets(self) -> None:
        address = Address.parse("tcp:[::1]:4711")
        assert (address.host, address.port, address.target) == ("[::1]", 4711, "[::1]:4711")

    @pytest.mark.parametrize(
        "text",
        [
            "tcp:127.0.0.1",
            "tcp::80",
            "tcp:host:port",
            "tcp:h:-1",
            "tcp:h:",
            "tcp:h:+1",
            "tcp:h: 1",
            # before: int() raised a bare ValueError on these
            "tcp:h:\u00b2",  # superscript two: str.isdigit() says yes
            "tcp:h:" + "9" * 5000,  # past int()'s digit limit
            # before: accepted, a port that does not exist
            "tcp:h:65536",
            "tcp:h:99999",
            "tcp:h:000001",
            # before: read as 3 (a non-ASCII digit that int() takes)
            "tcp:h:\u0663",
        ],
    )
    def test_a_tcp_address_needs_a_host_and_a_numeric_port(self, text: str) -> None:
        with pytest.raises(AddressError, match=r"^expected tcp:HOST:PORT \(port 0 allowed\)$"):
            Address.parse(text)

    @pytest.mark.parametrize(("port", "value"), [("0", 0), ("65535", 65535), ("00080", 80)])
    def test_a_port_is_up_to_five_ascii_digits_up_to_65535(self, port: str, value: int) -> None:
        assert Address.parse(f"tcp:h:{port}").port == value

    def test_a_unix_address_needs_a_path(self) -> None:
        # before: "unix:" was the current directory
        with pytest.raises(AddressError, match=r"^expected unix:PATH \(the path is empty\)$"):
            Address.parse("unix:", cwd="/cwd")

    @pytest.mark.parametrize("text", ["", "/run/w.sock", "http://x", "UNIX:/w", "127.0.0.1:80"])
    def test_any_other_form_is_refused(self, text: str) -> None:
        with pytest.raises(AddressError, match=r"^expected unix:PATH or tcp:HOST:PORT$"):
            Address.parse(text)

    def test_address_error_is_a_value_error(self) -> None:
        assert issubclass(AddressError, ValueError)


class TestFrames:
    def test_the_frames_socket_lies_next_to_a_unix_socket(self) -> None:
        assert Address.parse("unix:/r/w.sock").frames == Address("unix", path="/r/w.sock.frames")
        assert frames_path("/r/w.sock") == "/r/w.sock.frames"
        assert frames_path(Path("/r/w.sock")) == "/r/w.sock.frames"

    def test_a_tcp_address_has_no_frames_socket(self) -> None:
        assert Address.parse("tcp:127.0.0.1:1").frames is None


class TestUnix:
    def test_a_relative_path_is_made_absolute(self) -> None:
        assert Address.unix("w.sock") == Address("unix", path=str(Path.cwd() / "w.sock"))

    def test_an_absolute_path_stays(self) -> None:
        assert str(Address.unix(Path("/r/w.sock"))) == "unix:/r/w.sock"


class TestLenientHelpers:
    @pytest.mark.parametrize(
        ("address", "target"),
        [
            ("tcp:127.0.0.1:4711", "127.0.0.1:4711"),
            ("unix:/r/w.sock", "unix:/r/w.sock"),
            ("localhost:50051", "localhost:50051"),  # left to gRPC
        ],
    )
    def test_grpc_target(self, address: str, target: str) -> None:
        assert grpc_target(address) == target

    @pytest.mark.parametrize(
        ("address", "path"),
        [("unix:/r/w.sock", "/r/w.sock"), ("unix:w.sock", "w.sock"), ("tcp:h:1", None)],
    )
    def test_unix_path(self, address: str, path: str | None) -> None:
        assert unix_path(address) == path


class TestParseListen:
    """The worker's ``--listen``: the same reader, its error a usage error naming the flag."""

    def test_it_returns_the_address(self) -> None:
        assert parse_listen("unix:/r/w.sock") == Address("unix", path="/r/w.sock")

    @pytest.mark.parametrize(
        ("listen", "message"),
        [
            ("tcp:nope", "--listen 'tcp:nope': expected tcp:HOST:PORT (port 0 allowed)"),
            ("/r/w.sock", "--listen '/r/w.sock': expected unix:PATH or tcp:HOST:PORT"),
            # before: a bare ValueError, a traceback and exit code 1
            ("tcp:h:\u00b2", "--listen 'tcp:h:\u00b2': expected tcp:HOST:PORT (port 0 allowed)"),
            # before: accepted, and the worker bound some other port
            ("tcp:h:99999", "--listen 'tcp:h:99999': expected tcp:HOST:PORT (port 0 allowed)"),
            ("unix:", "--listen 'unix:': expected unix:PATH (the path is empty)"),
        ],
    )
    def test_a_bad_address_is_a_usage_error(self, listen: str, message: str) -> None:
        with pytest.raises(AdapterStartError) as caught:
            parse_listen(listen)
        assert str(caught.value) == message
        assert caught.value.code == 2


class TestReadyReportCheck:
    """spawn_worker reads a worker's reported address with the same parser."""

    @pytest.mark.parametrize(
        "reported",
        [
            "tcp:127.0.0.1:port",  # before: accepted (only the host was compared)
            "unix:/tcp:127.0.0.1:1",
            4711,
            "tcp:127.0.0.1:\u00b2",  # before: a bare ValueError out of spawn_worker
            "tcp:127.0.0.1:" + "9" * 5000,  # the same
            "tcp:127.0.0.1:99999",  # before: accepted
        ],
    )
    def test_a_tcp_report_must_be_a_tcp_address_on_the_chosen_host(self, reported: object) -> None:
        found = _unexpected_address({"address": reported}, "tcp:127.0.0.1:0", "/cwd")
        assert "names the address" in found

    def test_a_tcp_report_on_the_chosen_host_is_accepted(self) -> None:
        assert _unexpected_address({"address": "tcp:127.0.0.1:4711"}, "tcp:127.0.0.1:0", None) == ""

    def test_a_tcp_report_must_name_the_chosen_port(self) -> None:
        # before: only the host was compared, and the secret went to port 4444
        found = _unexpected_address({"address": "tcp:127.0.0.1:4444"}, "tcp:127.0.0.1:5555", None)
        chosen = "not the chosen 'tcp:127.0.0.1:5555'"
        assert found == f"names the address 'tcp:127.0.0.1:4444', {chosen}"

    def test_a_tcp_report_naming_the_chosen_port_is_accepted(self) -> None:
        ready = {"address": "tcp:127.0.0.1:5555"}
        assert _unexpected_address(ready, "tcp:127.0.0.1:5555", None) == ""
