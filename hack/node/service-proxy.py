#!/usr/bin/env python3
"""What kube-proxy does for one Service, in user space: accept TCP connections to the Service's
address on one network device (the node's pod bridge) and pipe each to the backend. Test
infrastructure of hack/node/node.sh, for the one Service its kube-proxy cannot serve: the test API
server listens on loopback only, and a loopback endpoint is invalid, so `kubernetes` has none.

    service-proxy.py --device lbn123 --listen 10.0.0.1:443 --to 127.0.0.1:6443

The listening socket is bound to the device (SO_BINDTODEVICE), so two nodes on one machine each
serve their own pods on the same Service address. TLS passes through untouched: the pods talk to
the API server itself. Prints "listening" once connections are accepted; runs until killed.
"""

import argparse
import asyncio
import socket


def host_port(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def serve(client_r, client_w, backend):
    try:
        backend_r, backend_w = await asyncio.open_connection(*backend)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pipe(client_r, backend_w), pipe(backend_r, client_w))
    for w in (backend_w, client_w):
        w.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", required=True)
    parser.add_argument("--listen", required=True, type=host_port)
    parser.add_argument("--to", required=True, type=host_port)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, args.device.encode())
    sock.bind(args.listen)
    sock.listen(128)
    sock.setblocking(False)
    server = await asyncio.start_server(lambda r, w: serve(r, w, args.to), sock=sock)
    print(f"listening on {args.listen[0]}:{args.listen[1]} ({args.device}) for {args.to[0]}:{args.to[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
