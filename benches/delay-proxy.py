#!/usr/bin/env python3
"""A TCP proxy that makes a loopback server look far away: every byte is
forwarded RTT/2 later than it arrived, in each direction, and a new
connection waits one RTT before its first byte goes through (the TCP
handshake a real link would cost). With --rate, each direction is also
paced to that many bits per second (one token bucket per direction, shared
by all connections, as on one link).

For benchmarks on machines whose kernel has no netem queueing discipline
(`tc qdisc add ... netem` answers "Specified qdisc kind is unknown"); it
slows only the connections made through it, never the machine's loopback.
What it does not model: TCP's own slow start and windows over the delay,
and packet loss.

Usage: benches/delay-proxy.py LISTEN_PORT TARGET_HOST:PORT --rtt-ms 20 [--rate 200mbit]
Prints "ready" on stdout once it listens.
"""
import argparse
import asyncio
import re
import sys
import time

CHUNK = 256 * 1024


def parse_rate(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"rate like 200mbit, not {text!r}")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)] / 8


class Bucket:
    """Paces bytes to `rate` per second (None: unlimited)."""

    def __init__(self, rate):
        self.rate = rate
        self.next_free = time.monotonic()

    async def take(self, n):
        if not self.rate:
            return
        now = time.monotonic()
        start = max(now, self.next_free)
        self.next_free = start + n / self.rate
        if self.next_free > now:
            await asyncio.sleep(self.next_free - now)


async def pump(reader, writer, delay, bucket):
    """Copies reader to writer, each chunk `delay` seconds after it arrived."""
    queue = asyncio.Queue()

    async def deliver():
        while True:
            item = await queue.get()
            if item is None:
                break
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await bucket.take(len(data))
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    sender = asyncio.ensure_future(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            await queue.put((time.monotonic() + delay, data))
    except ConnectionError:
        pass
    await queue.put(None)
    try:
        await sender
    except ConnectionError:
        pass


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("listen_port", type=int)
    ap.add_argument("target")
    ap.add_argument("--rtt-ms", type=float, required=True)
    ap.add_argument("--rate", type=parse_rate, default=None)
    args = ap.parse_args()
    host, port = args.target.rsplit(":", 1)
    half = args.rtt_ms / 2000
    up, down = Bucket(args.rate), Bucket(args.rate)

    async def handle(client_r, client_w):
        try:
            await asyncio.sleep(2 * half)  # the handshake's round trip
            server_r, server_w = await asyncio.open_connection(host, int(port))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            pump(client_r, server_w, half, up),
            pump(server_r, client_w, half, down),
        )
        for w in (server_w, client_w):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", args.listen_port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
