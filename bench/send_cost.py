"""What one small send() to a loopback TCP socket costs on this machine, with and without a reader to wake.

    python bench/send_cost.py [--sockets 100] [--rounds 200] [--gap 0.01] [--threads 1]

A fan-out to S subscribers ends in S send() calls, one per connection, whatever the server: this is the floor
under the fan-out latency figures of bench/runner.py. Each round sends one 120-byte message to every socket
and the time per send() is reported (median and p90 over the rounds), in two set-ups:

- "no reader": nobody waits on the receiving sockets (the bytes just pile up in the kernel);
- "reader asleep": a child process waits on all of them in epoll and reads whatever arrives, so a send()
  may have to wake it, as a WebSocket client does.

``--gap`` seconds pass between rounds (0.01: 100 rounds a second, like the 100 publishes/s latency scenario;
0: back to back, with warm caches). ``--threads 2`` splits each round's sends over two threads (the GIL is
released during send()), to see whether a server could send a broadcast faster from several threads; the
time of a whole round is reported too.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import threading
import time


class _Sender(threading.Thread):
    """Sends ``message`` to ``conns`` each time it is told to go; ``done`` is set after each round."""

    def __init__(self, message: bytes) -> None:
        super().__init__(daemon=True)
        self.message = message
        self.conns: list[socket.socket] = []
        self.go = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            self.go.wait()
            self.go.clear()
            for c in self.conns:
                c.send(self.message)
            self.done.set()


def measure(
    sockets: int, rounds: int, gap: float, reader: bool, threads: int = 1
) -> tuple[float, float, float]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(sockets + 10)
    port = server.getsockname()[1]
    child = 0
    clients: list[socket.socket] = []
    if reader:
        child = os.fork()
        if child == 0:  # the reader: every socket in one epoll, read until the server side closes
            mine = [socket.create_connection(("127.0.0.1", port)) for _ in range(sockets)]
            poll = select.epoll()
            by_fd = {s.fileno(): s for s in mine}
            for fd in by_fd:
                poll.register(fd, select.EPOLLIN)
            open_count = len(by_fd)
            while open_count:
                for fd, _ in poll.poll():
                    if not by_fd[fd].recv(65536):
                        poll.unregister(fd)
                        open_count -= 1
            os._exit(0)
    else:
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(sockets)]
    conns = [server.accept()[0] for _ in range(sockets)]
    for c in conns:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.setblocking(False)
    message = b"x" * 120
    helpers = [_Sender(message) for _ in range(threads - 1)]
    share = -(-sockets // threads)
    for i, helper in enumerate(helpers, 1):
        helper.conns = conns[i * share : (i + 1) * share]
        helper.start()
    mine = conns[:share]
    per_send: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        for helper in helpers:
            helper.done.clear()
            helper.go.set()
        for c in mine:
            c.send(message)
        for helper in helpers:
            helper.done.wait()
        per_send.append((time.perf_counter() - started) * 1e6 / sockets)
        time.sleep(gap)
    for c in conns + clients:
        c.close()
    server.close()
    if child:
        os.waitpid(child, 0)
    per_send.sort()
    p50, p90 = per_send[len(per_send) // 2], per_send[int(len(per_send) * 0.9)]
    return p50, p90, p50 * sockets / 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1, help="threads sharing each round's sends")
    args = parser.parse_args()
    for reader in (False, True):
        p50, p90, round_ms = measure(args.sockets, args.rounds, args.gap, reader, max(1, args.threads))
        label = "reader asleep" if reader else "no reader"
        print(
            f"{label:>13}: {p50:.1f} us per send() (p90 {p90:.1f}), a round {round_ms:.2f} ms, "
            f"{args.sockets} sockets, {args.threads} thread(s), gap {args.gap:g} s"
        )


if __name__ == "__main__":
    main()
