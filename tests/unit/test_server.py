"""proxy.server.GatheredWrites: a turn's writes go out together, in order, and nothing waits
past the turn, a close or the size bound."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.server import FLUSH_BYTES, GatheredWrites


class RecordingTransport(asyncio.Transport):
    """Stands in for the socket's transport: keeps each write and what was called."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.calls: list[str] = []
        self.closing = False

    def write(self, data: Any) -> None:
        assert not self.closing, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.calls.append("close")
        self.closing = True

    def abort(self) -> None:
        self.calls.append("abort")
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 4242)}.get(name, default)

    def pause_reading(self) -> None:
        self.calls.append("pause_reading")

    def resume_reading(self) -> None:
        self.calls.append("resume_reading")


def run(test: Any) -> None:
    async def main() -> None:
        transport = RecordingTransport()
        await test(transport, GatheredWrites(transport, asyncio.get_running_loop()))
    asyncio.run(main())


def test_the_writes_of_one_turn_go_out_in_one_write_in_order() -> None:
    async def test(real: RecordingTransport, gathered: GatheredWrites) -> None:
        gathered.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        gathered.write(b"")  # nothing to send adds nothing
        gathered.write(memoryview(b"{}"))
        assert real.writes == []
        assert gathered.get_write_buffer_size() == 40 + 7  # waiting + the socket's own
        await asyncio.sleep(0)
        assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        gathered.write(b"next")
        await asyncio.sleep(0)
        assert real.writes[1:] == [b"next"]
        await asyncio.sleep(0)
        assert len(real.writes) == 2  # a turn with nothing written writes nothing
    run(test)


def test_a_stream_is_written_as_it_comes_one_turn_at_a_time() -> None:
    async def test(real: RecordingTransport, gathered: GatheredWrites) -> None:
        for i in range(3):
            gathered.write(b"chunk %d" % i)
            await asyncio.sleep(0)
            assert real.writes[-1] == b"chunk %d" % i
        assert len(real.writes) == 3
    run(test)


def test_more_than_the_bound_is_written_at_once() -> None:
    async def test(real: RecordingTransport, gathered: GatheredWrites) -> None:
        gathered.write(b"head")
        gathered.write(b"x" * FLUSH_BYTES)
        assert real.writes == [b"head" + b"x" * FLUSH_BYTES]
        await asyncio.sleep(0)
        assert len(real.writes) == 1  # the scheduled write finds nothing left
    run(test)


def test_close_writes_what_waits_first_and_abort_drops_it() -> None:
    async def test(real: RecordingTransport, gathered: GatheredWrites) -> None:
        gathered.write(b"last words")
        gathered.close()
        assert real.writes == [b"last words"] and real.calls == ["close"]
        await asyncio.sleep(0)
        assert real.writes == [b"last words"]

        other = RecordingTransport()
        aborted = GatheredWrites(other, asyncio.get_running_loop())
        aborted.write(b"never sent")
        aborted.abort()
        await asyncio.sleep(0)
        assert other.writes == [] and other.calls == ["abort"]
        assert aborted.get_write_buffer_size() == 7
    run(test)


def test_nothing_is_written_to_a_connection_that_is_closing() -> None:
    async def test(real: RecordingTransport, gathered: GatheredWrites) -> None:
        gathered.write(b"answer")
        real.closing = True  # the caller hung up within the turn
        await asyncio.sleep(0)
        assert real.writes == []
        assert gathered.is_closing()
    run(test)


@pytest.mark.parametrize("call", ["pause_reading", "resume_reading"])
def test_reading_control_and_facts_are_the_sockets(call: str) -> None:
    async def test(real: RecordingTransport, gathered: GatheredWrites) -> None:
        getattr(gathered, call)()
        assert real.calls == [call]
        assert gathered.get_extra_info("peername") == ("127.0.0.1", 4242)
        assert gathered.get_extra_info("sockname", "none") == "none"
    run(test)
