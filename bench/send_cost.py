"""What one small send() to a loopback TCP socket costs on this machine, with and without a reader to wake.

    /work/venv/bin/python bench/send_cost.py [--sockets 100] [--rounds 200] [--gap 0.01]

A fan-out to S subscribers ends in S send() calls, one per connection, whatever the server: this is the floor
under the fan-out latency figures of bench/runner.py. Each round sends one 120-byte message to every socket
and the time per send() is reported (median and p90 over the rounds), in two set-ups:

- "no reader": nobody waits on the receiving sockets (the bytes just pile up in the kernel);
- "reader asleep": a child process waits on all of them in epoll and reads whatever arrives, so a send()
  may have to wake it, as a WebSocket client does.

``--gap`` seconds pass between rounds (0.01: 100 rounds a second, like the 100 publishes/s latency scenario;
0: back to back, with warm caches).
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import time


def measure(sockets: int, rounds: int, gap: float, reader: bool) -> tuple[float, float]:
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
    per_send: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        for c in conns:
            c.send(message)
        per_send.append((time.perf_counter() - started) * 1e6 / sockets)
        time.sleep(gap)
    for c in conns + clients:
        c.close()
    server.close()
    if child:
        os.waitpid(child, 0)
    per_send.sort()
    return per_send[len(per_send) // 2], per_send[int(len(per_send) * 0.9)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.01)
    args = parser.parse_args()
    for reader in (False, True):
        p50, p90 = measure(args.sockets, args.rounds, args.gap, reader)
        label = "reader asleep" if reader else "no reader"
        print(
            f"{label:>13}: {p50:.1f} us per send() (p90 {p90:.1f}), "
            f"{args.sockets} sockets, gap {args.gap:g} s"
        )


if __name__ == "__main__":
    main()
