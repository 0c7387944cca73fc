#!/usr/bin/env python3
"""Publish to weir over its streaming WebSocket route, with many messages in flight.

    python3 weir_publish.py DESTINATION [MESSAGE ...]     # no MESSAGE: one per line of stdin

Opens ``GET /v1/destinations/DESTINATION/publish`` as a WebSocket, sends the messages keeping at
most ``--in-flight`` of them unacknowledged, and prints each acknowledgement as the server sends
it (in order), one JSON object per line on stdout:

    {"seq":0,"offset":41,"id":"0197..."}
    {"seq":1,"offset":42,"id":"order-2","duplicate":true}
    {"seq":2,"error":{"code":"invalid_message","message":"..."}}

A message without key, id or headers goes as a binary WebSocket message (the payload itself);
with ``--key``, ``--id-prefix`` or ``--header`` it goes as a text message, a JSON object
``{"payload", "key", "id", "headers"}``. ``--id-prefix P`` gives message i the id ``P<i>``: run
the same command again after a failure and what was stored already answers ``duplicate``.

Exit status: 0 when every message was stored, 1 when the server refused some (their acks say
why), 2 when the connection could not be opened or ended before every message was acknowledged
(the unacknowledged ones may or may not be stored: resend them with the same ids).

Needs the ``websockets`` package (``pip install websockets``; written against 17.x, which needs
Python 3.11; any release from 15 on will do). See README.md beside this file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("destination", help="a queue or topic")
    p.add_argument("messages", nargs="*", help="payloads (default: one per line of stdin)")
    p.add_argument(
        "--server",
        default="http://127.0.0.1:7070",
        help="weir's HTTP address (default: %(default)s)",
    )
    p.add_argument("--token", help="server.api_token, sent as `Authorization: Bearer`")
    p.add_argument(
        "--in-flight",
        type=int,
        default=64,
        help="most messages sent and not yet acknowledged (default: %(default)s; the server "
        "reads at most 8192 ahead of its acknowledgements)",
    )
    p.add_argument("--key", help="the key of every message (ordering, per-key parking)")
    p.add_argument("--id-prefix", help="message i gets id PREFIX<i> (dedup on retries)")
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a header on every message (repeatable; names starting with weir- are refused)",
    )
    p.add_argument("--quiet", action="store_true", help="print no acknowledgements, only the summary")
    args = p.parse_args(argv)
    if args.in_flight < 1:
        p.error("--in-flight must be at least 1")
    for h in args.header:
        if "=" not in h:
            p.error(f"--header {h!r}: expected NAME=VALUE")
    return args


def websocket_url(server: str, destination: str) -> str:
    """``http://host:port`` (or ``ws://``) -> ``ws://host:port/v1/destinations/DEST/publish``."""
    parts = urlsplit(server if "://" in server else f"http://{server}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}[parts.scheme]
    path = parts.path.rstrip("/") + f"/v1/destinations/{quote(destination, safe='')}/publish"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def encode(args: argparse.Namespace, i: int, payload: str) -> str | bytes:
    """The WebSocket message for payload number ``i``: binary when it is nothing but a payload."""
    if not (args.key or args.id_prefix or args.header):
        return payload.encode()
    message: dict[str, object] = {"payload": payload}
    if args.key:
        message["key"] = args.key
    if args.id_prefix:
        message["id"] = f"{args.id_prefix}{i}"
    if args.header:
        message["headers"] = dict(h.split("=", 1) for h in args.header)
    return json.dumps(message)


async def publish(args: argparse.Namespace, payloads: list[str]) -> int:
    url = websocket_url(args.server, args.destination)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    try:
        # No permessage-deflate (weir does not offer it) and no proxy from the environment.
        ws = await connect(url, additional_headers=headers, compression=None, proxy=None)
    except InvalidStatus as e:
        # weir answers a wrong destination or a missing token before the upgrade, in JSON.
        body = e.response.body.decode(errors="replace") if e.response.body else ""
        print(f"error: {url}: HTTP {e.response.status_code} {body}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot connect to {url}: {e}", file=sys.stderr)
        return 2

    window = asyncio.Semaphore(args.in_flight)
    stored = refused = duplicates = 0

    async def send_all() -> None:
        for i, payload in enumerate(payloads):
            await window.acquire()  # released by the acknowledgement
            await ws.send(encode(args, i, payload))

    async with ws:
        sender = asyncio.create_task(send_all())
        try:
            # Acknowledgements come in the order the messages were sent: seq 0, 1, 2, ...
            while stored + refused < len(payloads):
                text = await ws.recv()
                ack = json.loads(text)
                window.release()
                if "offset" in ack:
                    stored += 1
                    duplicates += bool(ack.get("duplicate"))
                else:
                    refused += 1
                if not args.quiet:
                    print(text, flush=True)
        except ConnectionClosed as e:
            # 1009: a message over the size limit; 1002: not a valid WebSocket frame;
            # 1001: weir is shutting down. Everything acknowledged so far is durable.
            code = e.rcvd.code if e.rcvd else None
            reason = e.rcvd.reason if e.rcvd else ""
            print(
                f"error: the server closed the connection (code {code} {reason!r}) with "
                f"{len(payloads) - stored - refused} of {len(payloads)} messages unacknowledged",
                file=sys.stderr,
            )
            return 2
        finally:
            sender.cancel()
            # Retrieved, so that a send that failed with the connection is not reported twice.
            await asyncio.gather(sender, return_exceptions=True)
        # Every message is acknowledged: a normal close (1000) on leaving `async with`.
    print(f"{stored} stored ({duplicates} already were), {refused} refused", file=sys.stderr)
    return 1 if refused else 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    payloads = args.messages or [line.rstrip("\n") for line in sys.stdin]
    if not payloads:
        print("nothing to publish", file=sys.stderr)
        return 0
    return asyncio.run(publish(args, payloads))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
