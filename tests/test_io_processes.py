"""termite.io: open files and a node's standard streams as processes (the paper's section 3.1)."""

import io
import queue
import threading

import pytest
from io_users import holds_a_raw_resource, prints_home_from_there, writes_then_migrates

import termite
from termite import DeadProcess, Down, gen_server


class PipeReader:
    """Reads a node process's stdout on a thread, so a test can wait for lines with a time limit."""

    def __init__(self, pipe):
        self.chunks = queue.Queue()  # lines, as they come
        self.thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self.thread.start()

    def _pump(self, pipe):
        for line in pipe:
            self.chunks.put(line)

    def lines(self, count, timeout=10):
        return [self.chunks.get(timeout=timeout) for _ in range(count)]


# -- files ------------------------------------------------------------------------


def test_read_write_seek_tell_and_close_through_the_pid(tmp_path):
    path = tmp_path / "notes.txt"

    async def main():
        f = termite.io.open_file(path, "w+", encoding="utf-8")
        written = [await termite.io.write(f, "first line\n"), await termite.io.write(f, "second\n")]
        termite.send(f, ("write", "sent, not called\n"))  # no answer; in order with the calls
        position = await termite.io.tell(f)
        await termite.io.seek(f, 0)
        first = await termite.io.readline(f)
        rest = await termite.io.read(f)
        at_end = await termite.io.read(f)
        raw = await termite.call(f, ("tell",), timeout=5)  # the protocol, as a plain call
        await termite.io.close(f)
        await termite.io.close(f)  # closing a closed file does nothing, as in Python
        return written, position, first, rest, at_end, raw

    written, position, first, rest, at_end, raw = termite.run(main)
    assert written == [11, 7] and position == 35
    assert (first, rest, at_end) == ("first line\n", "second\nsent, not called\n", "")
    assert raw == ("ok", 35)
    assert path.read_text() == "first line\nsecond\nsent, not called\n"


def test_binary_files_take_and_give_bytes(tmp_path):
    path = tmp_path / "data.bin"

    async def main():
        f = termite.io.open_file(path, "wb")
        await termite.io.write(f, b"\x00\x01\x02")
        await termite.io.close(f)
        g = termite.io.open_file(path, "rb")
        data = await termite.io.read(g, 2), await termite.io.read(g)
        await termite.io.close(g)
        return data

    assert termite.run(main) == (b"\x00\x01", b"\x02")


def test_errors_are_raised_in_the_caller_as_python_raises_them(tmp_path):
    path = tmp_path / "read-only.txt"
    path.write_text("text")

    async def main():
        with pytest.raises(FileNotFoundError):
            termite.io.open_file(tmp_path / "missing" / "x.txt")
        with pytest.raises(ValueError, match="mode"):
            termite.io.open_file(path, "nonsense")
        f = termite.io.open_file(path)
        with pytest.raises(io.UnsupportedOperation):
            await termite.io.write(f, "no")
        with pytest.raises(TypeError):  # the file's own error, raised here; the proxy lives on
            await termite.io.read(f, "ten")
        unknown = await termite.call(f, ("truncate", 0), timeout=5)
        still = await termite.io.read(f)
        await termite.io.close(f)
        with pytest.raises(ValueError, match="closed file"):
            await termite.io.read(f)
        with pytest.raises(TypeError, match="pid"):
            await termite.io.read("notes.txt")
        return unknown, still

    unknown, still = termite.run(main)
    assert unknown[0] == "error" and "not a termite.io request" in str(unknown[1])
    assert still == "text"


def test_the_file_closes_when_its_owner_ends(tmp_path):
    path = tmp_path / "owned.txt"

    async def opener(reply_to):
        f = termite.io.open_file(path, "w")
        termite.send(f, ("write", "buffered until closed"))
        termite.send(reply_to, ("opened", f))
        await termite.receive("end")

    async def main():
        me = termite.self()
        owner = termite.spawn(opener, me)
        _, f = await termite.receive(("opened", termite.Pid))
        watch = termite.monitor(f)
        termite.send(owner, "end")
        down = await termite.receive(Down(watch, f, termite.ANY), timeout=5)
        return down.reason, path.read_text()

    assert termite.run(main) == ("normal", "buffered until closed")


def test_another_owner_may_be_given_and_plain_python_may_use_the_file(node, tmp_path):
    path = tmp_path / "shell.txt"
    f = node.run(lambda: termite.io.open_file(path, "w", owner=node.pid))  # the run's process ends; the file stays
    assert node.call(f, ("write", "from plain Python"), timeout=5) == ("ok", 17)
    node.run(termite.io.close, f)
    assert path.read_text() == "from plain Python"
    with pytest.raises(TypeError, match="owner"):
        node.run(lambda: termite.io.open_file(path, "w", owner="me"))


# -- across nodes, and migration ----------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_process_that_migrates_keeps_using_the_file_on_its_home_node(cluster, tmp_path):
    here, start = cluster
    b = here.connect(*start().ref.address)
    path = tmp_path / "travels.txt"
    mover = here.spawn(writes_then_migrates, here.pid, str(path), b)
    _, where, f, content = here.receive(("moved", ...), timeout=20)
    assert where == b and f.node == here.ref  # the process moved; the file (its proxy) stayed home
    assert content == f"1 at {here.ref}\n2 from {b}\n"
    watch = here.monitor(f)
    here.send(mover, "end")  # the owner ends, over there: its file closes here
    assert here.receive(Down, timeout=20) == Down(watch, f, "normal")
    assert path.read_text() == content


@pytest.mark.timeout(90)
def test_a_nodes_stdout_is_a_process_registered_once_and_a_migrant_prints_at_home(cluster):
    here, start = cluster
    b_node, c_node = start(), start()
    b, c = here.connect(*b_node.ref.address), here.connect(*c_node.ref.address)
    printed = PipeReader(b_node.proc.stdout)

    out = here.run(termite.io.stdout, b)
    assert out.node == b and here.run(termite.io.stdout, b) == out
    assert here.run(termite.whereis_on, b, "termite.stdout") == out
    assert here.run(termite.io.stderr, b) not in (out, None)
    here.run(termite.io.write, out, "hello from the test\n")
    assert printed.lines(1) == ["hello from the test\n"]

    # Started on b, the process takes b's stdout, moves to c, and prints on b.
    here.spawn_on(b, prints_home_from_there, here.pid, c, "the migrant")
    assert here.receive(("printed", ...), timeout=20) == ("printed", c, out)
    assert printed.lines(2) == ["the migrant (call)\n", "the migrant (send)\n"]

    with pytest.raises(ValueError, match="never closed"):
        here.run(termite.io.close, out)


@pytest.mark.timeout(90)
def test_a_stdout_nobody_reads_holds_up_its_proxy_not_its_node(cluster):
    here, start = cluster
    b_node = start()
    b = here.connect(*b_node.ref.address)
    out = here.run(termite.io.stdout, b)
    line = "x" * 999 + "\n"
    for _ in range(200):  # 200 kB: more than a pipe holds, so the write waits for a reader
        here.run(termite.send, out, ("write", line))
    # The node answers while its stdout waits: a remote spawn runs there and replies.
    server = here.run(lambda: gen_server.start_wait(gen_server.GenServer(), 7, node=b, timeout=10))
    assert server.node == b
    printed = PipeReader(b_node.proc.stdout)  # now read it: every line comes out, in order
    assert printed.lines(200, timeout=20) == [line] * 200


@pytest.mark.parametrize("kind", ["text", "binary", "socket"])
def test_migrating_with_a_raw_file_or_socket_says_to_use_termite_io(cluster, tmp_path, kind):
    here, start = cluster
    b = here.connect(*start().ref.address)
    here.spawn(holds_a_raw_resource, here.pid, b, kind, str(tmp_path / "raw"))
    _, text, variable, where = here.receive(("refused", ...), timeout=20)
    assert variable == "resource" and where == here.ref  # refused: it stayed
    assert "termite.io.open_file" in text
    assert ("socket" in text) == (kind == "socket")


def test_stdout_of_a_lost_node_is_an_error_not_a_hang(cluster):
    here, start = cluster
    b_node = start()
    b = here.connect(*b_node.ref.address)
    b_node.kill()
    with pytest.raises((DeadProcess, termite.Timeout)):
        here.run(termite.io.stdout, b, 10)
