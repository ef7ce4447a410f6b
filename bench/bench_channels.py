"""Channel throughput and latency: greenpipe against its peers, in one run.

Cases, each with small integer items:

* one producer and one consumer, capacity 1 and 128;
* fan-in: 8 producers, 1 consumer, capacity 128;
* ping-pong: two tasks bounce one item over two channels (round-trip time).

Peers: gevent.queue.Queue, asyncio.Queue, trio memory channels and
queue.Queue between OS threads. Results are the best of ``--repeat`` runs.

Run: ``python bench/bench_channels.py [--items N] [--repeat R] [--json PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import queue
import sys
import threading
import time
from typing import Callable

import gevent
import gevent.queue

import greenpipe

try:
    import trio
except ImportError:  # pragma: no cover - trio is in the 'bench' extra
    trio = None


def best_of(repeat: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(repeat))


# -- one producer, one consumer ---------------------------------------------------


def greenpipe_pair(items: int, capacity: int, threads: int) -> float:
    def body(scope):
        channel = greenpipe.make_channel(capacity)
        producer = channel.producer()

        def produce(s):
            with producer:
                send = producer.send
                for index in range(1, items + 1):
                    send(index)

        start = time.perf_counter()
        scope.spawn(produce)
        total = 0
        for item in channel:
            total += item
        elapsed = time.perf_counter() - start
        assert total == items * (items + 1) // 2
        return elapsed

    return greenpipe.run(body, threads=threads)


def gevent_pair(items: int, capacity: int) -> float:
    q: gevent.queue.Queue = gevent.queue.Queue(capacity)
    done = object()

    def produce():
        for index in range(1, items + 1):
            q.put(index)
        q.put(done)

    start = time.perf_counter()
    g = gevent.spawn(produce)
    total = 0
    while True:
        item = q.get()
        if item is done:
            break
        total += item
    g.join()
    elapsed = time.perf_counter() - start
    assert total == items * (items + 1) // 2
    return elapsed


def asyncio_pair(items: int, capacity: int) -> float:
    async def main() -> float:
        q: asyncio.Queue = asyncio.Queue(capacity)

        async def produce():
            for index in range(1, items + 1):
                await q.put(index)
            await q.put(None)

        start = time.perf_counter()
        task = asyncio.ensure_future(produce())
        total = 0
        while True:
            item = await q.get()
            if item is None:
                break
            total += item
        await task
        elapsed = time.perf_counter() - start
        assert total == items * (items + 1) // 2
        return elapsed

    return asyncio.run(main())


def trio_pair(items: int, capacity: int) -> float:
    async def main() -> float:
        send, receive = trio.open_memory_channel(capacity)
        result = {}

        async def produce():
            async with send:
                for index in range(1, items + 1):
                    await send.send(index)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            total = 0
            async with receive:
                async for item in receive:
                    total += item
        result["elapsed"] = time.perf_counter() - start
        assert total == items * (items + 1) // 2
        return result["elapsed"]

    return trio.run(main)


def thread_pair(items: int, capacity: int) -> float:
    q: queue.Queue = queue.Queue(capacity)

    def produce():
        for index in range(1, items + 1):
            q.put(index)
        q.put(None)

    start = time.perf_counter()
    thread = threading.Thread(target=produce)
    thread.start()
    total = 0
    while True:
        item = q.get()
        if item is None:
            break
        total += item
    thread.join()
    elapsed = time.perf_counter() - start
    assert total == items * (items + 1) // 2
    return elapsed


# -- fan-in ------------------------------------------------------------------------


def greenpipe_fan_in(items: int, producers: int, threads: int) -> float:
    per = items // producers

    def body(scope):
        channel = greenpipe.make_channel(128)
        slots = [channel.producer() for _ in range(producers)]

        def produce(s, slot):
            with slot:
                send = slot.send
                for index in range(per):
                    send(index + 1)

        start = time.perf_counter()
        for slot in slots:
            scope.spawn(produce, slot)
        count = 0
        for _ in channel:
            count += 1
        elapsed = time.perf_counter() - start
        assert count == per * producers
        return elapsed

    return greenpipe.run(body, threads=threads)


def gevent_fan_in(items: int, producers: int) -> float:
    per = items // producers
    q: gevent.queue.Queue = gevent.queue.Queue(128)

    def produce():
        for index in range(per):
            q.put(index + 1)
        q.put(None)

    start = time.perf_counter()
    greenlets = [gevent.spawn(produce) for _ in range(producers)]
    finished = count = 0
    while finished < producers:
        if q.get() is None:
            finished += 1
        else:
            count += 1
    gevent.joinall(greenlets)
    elapsed = time.perf_counter() - start
    assert count == per * producers
    return elapsed


def asyncio_fan_in(items: int, producers: int) -> float:
    per = items // producers

    async def main() -> float:
        q: asyncio.Queue = asyncio.Queue(128)

        async def produce():
            for index in range(per):
                await q.put(index + 1)
            await q.put(None)

        start = time.perf_counter()
        tasks = [asyncio.ensure_future(produce()) for _ in range(producers)]
        finished = count = 0
        while finished < producers:
            if await q.get() is None:
                finished += 1
            else:
                count += 1
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        assert count == per * producers
        return elapsed

    return asyncio.run(main())


def trio_fan_in(items: int, producers: int) -> float:
    per = items // producers

    async def main() -> float:
        send, receive = trio.open_memory_channel(128)

        async def produce(channel):
            async with channel:
                for index in range(per):
                    await channel.send(index + 1)

        start = time.perf_counter()
        count = 0
        async with trio.open_nursery() as nursery:
            for _ in range(producers):
                nursery.start_soon(produce, send.clone())
            await send.aclose()
            async with receive:
                async for _ in receive:
                    count += 1
        elapsed = time.perf_counter() - start
        assert count == per * producers
        return elapsed

    return trio.run(main)


def thread_fan_in(items: int, producers: int) -> float:
    per = items // producers
    q: queue.Queue = queue.Queue(128)

    def produce():
        for index in range(per):
            q.put(index + 1)
        q.put(None)

    start = time.perf_counter()
    threads = [threading.Thread(target=produce) for _ in range(producers)]
    for thread in threads:
        thread.start()
    finished = count = 0
    while finished < producers:
        if q.get() is None:
            finished += 1
        else:
            count += 1
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    assert count == per * producers
    return elapsed


# -- ping-pong -------------------------------------------------------------------------


def greenpipe_ping_pong(rounds: int, threads: int) -> float:
    def body(scope):
        ping = greenpipe.make_channel(1)
        pong = greenpipe.make_channel(1)

        def echo(s):
            for item in ping:
                pong.send(item)

        scope.spawn(echo)
        start = time.perf_counter()
        for index in range(1, rounds + 1):
            ping.send(index)
            pong.receive()
        elapsed = time.perf_counter() - start
        ping.close()
        return elapsed / rounds

    return greenpipe.run(body, threads=threads)


def gevent_ping_pong(rounds: int) -> float:
    ping: gevent.queue.Queue = gevent.queue.Queue(1)
    pong: gevent.queue.Queue = gevent.queue.Queue(1)

    def echo():
        while True:
            item = ping.get()
            if item is None:
                return
            pong.put(item)

    g = gevent.spawn(echo)
    start = time.perf_counter()
    for index in range(1, rounds + 1):
        ping.put(index)
        pong.get()
    elapsed = time.perf_counter() - start
    ping.put(None)
    g.join()
    return elapsed / rounds


def asyncio_ping_pong(rounds: int) -> float:
    async def main() -> float:
        ping: asyncio.Queue = asyncio.Queue(1)
        pong: asyncio.Queue = asyncio.Queue(1)

        async def echo():
            while True:
                item = await ping.get()
                if item is None:
                    return
                await pong.put(item)

        task = asyncio.ensure_future(echo())
        start = time.perf_counter()
        for index in range(1, rounds + 1):
            await ping.put(index)
            await pong.get()
        elapsed = time.perf_counter() - start
        await ping.put(None)
        await task
        return elapsed / rounds

    return asyncio.run(main())


def trio_ping_pong(rounds: int) -> float:
    async def main() -> float:
        ping_send, ping_receive = trio.open_memory_channel(1)
        pong_send, pong_receive = trio.open_memory_channel(1)

        async def echo():
            async for item in ping_receive:
                await pong_send.send(item)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            start = time.perf_counter()
            for index in range(1, rounds + 1):
                await ping_send.send(index)
                await pong_receive.receive()
            elapsed = time.perf_counter() - start
            await ping_send.aclose()
        return elapsed / rounds

    return trio.run(main)


def thread_ping_pong(rounds: int) -> float:
    ping: queue.Queue = queue.Queue(1)
    pong: queue.Queue = queue.Queue(1)

    def echo():
        while True:
            item = ping.get()
            if item is None:
                return
            pong.put(item)

    thread = threading.Thread(target=echo)
    thread.start()
    start = time.perf_counter()
    for index in range(1, rounds + 1):
        ping.put(index)
        pong.get()
    elapsed = time.perf_counter() - start
    ping.put(None)
    thread.join()
    return elapsed / rounds


def greenlet_switch_floor(rounds: int) -> float:
    from greenlet import getcurrent, greenlet

    main = getcurrent()

    def other():
        while True:
            main.switch()

    peer = greenlet(other)
    start = time.perf_counter()
    for _ in range(rounds):
        peer.switch()
    return (time.perf_counter() - start) / rounds


# -- driver ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="items per throughput case")
    parser.add_argument("--rounds", type=int, default=100_000, help="ping-pong round trips")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the best counts")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    items, repeat = args.items, args.repeat

    rows: list[tuple[str, str, float, str]] = []

    def rate(case: str, peer: str, fn: Callable[[], float]) -> None:
        seconds = best_of(repeat, fn)
        rows.append((case, peer, items / seconds, "items/s"))
        print(f"{case:22} {peer:22} {items / seconds:14,.0f} items/s", flush=True)

    def latency(case: str, peer: str, fn: Callable[[], float]) -> None:
        seconds = best_of(repeat, fn)
        rows.append((case, peer, seconds * 1e6, "us per round trip"))
        print(f"{case:22} {peer:22} {seconds * 1e6:14.2f} us/round trip", flush=True)

    for capacity in (1, 128):
        case = f"1 to 1, capacity {capacity}"
        rate(case, "greenpipe, 1 thread", lambda c=capacity: greenpipe_pair(items, c, 1))
        rate(case, "greenpipe, 2 threads", lambda c=capacity: greenpipe_pair(items, c, 2))
        rate(case, "gevent.queue", lambda c=capacity: gevent_pair(items, c))
        rate(case, "asyncio.Queue", lambda c=capacity: asyncio_pair(items, c))
        if trio is not None:
            rate(case, "trio memory channel", lambda c=capacity: trio_pair(items, c))
        rate(case, "queue.Queue, threads", lambda c=capacity: thread_pair(items, c))

    case = "8 to 1, capacity 128"
    rate(case, "greenpipe, 1 thread", lambda: greenpipe_fan_in(items, 8, 1))
    rate(case, "greenpipe, 2 threads", lambda: greenpipe_fan_in(items, 8, 2))
    rate(case, "gevent.queue", lambda: gevent_fan_in(items, 8))
    rate(case, "asyncio.Queue", lambda: asyncio_fan_in(items, 8))
    if trio is not None:
        rate(case, "trio memory channel", lambda: trio_fan_in(items, 8))
    rate(case, "queue.Queue, threads", lambda: thread_fan_in(items, 8))

    rounds = args.rounds
    case = "ping-pong"
    latency(case, "greenpipe, 1 thread", lambda: greenpipe_ping_pong(rounds, 1))
    latency(case, "greenpipe, 2 threads", lambda: greenpipe_ping_pong(rounds, 2))
    latency(case, "gevent.queue", lambda: gevent_ping_pong(rounds))
    latency(case, "asyncio.Queue", lambda: asyncio_ping_pong(rounds))
    if trio is not None:
        latency(case, "trio memory channel", lambda: trio_ping_pong(rounds))
    latency(case, "queue.Queue, threads", lambda: thread_ping_pong(rounds))
    latency(case, "bare greenlet switch", lambda: greenlet_switch_floor(rounds))

    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(
                {
                    "python": sys.version.split()[0],
                    "machine": platform.machine(),
                    "rows": [
                        {"case": c, "peer": p, "value": v, "unit": u} for c, p, v, u in rows
                    ],
                },
                stream,
                indent=2,
            )


if __name__ == "__main__":
    main()
