"""A TCP proxy on loopback that cuts connections at random points, in requests and in responses."""

import random
import socket
import struct
import threading


class FaultyProxy:
    """Forwards to `upstream`; each chunk it forwards is, with probability `cut`, the last: a random
    part of it goes through, then both connections are reset. `cuts` counts how often that happened.
    `cut_all()` resets every connection open now, as a pulled cable that is plugged in again would."""

    def __init__(self, upstream: tuple[str, int], cut: float, seed: int) -> None:
        self.upstream = upstream
        self.cut = cut
        self.random = random.Random(seed)
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stopped = False
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_all(self) -> None:
        with self._lock:
            open_now, self._open = self._open, set()
        for sock in open_now:
            _reset(sock)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._open.update((client, server))
            for sock in (client, server):  # forward each piece at once, as a router would
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target, client, server), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, *pair: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                with self._lock:
                    cut_here = self.random.random() < self.cut
                    keep = self.random.randrange(len(chunk)) if cut_here else len(chunk)
                target.sendall(chunk[:keep])
                if cut_here:
                    with self._lock:
                        self.cuts += 1
                    break
        except OSError:
            pass
        for sock in pair:
            _reset(sock)

    def close(self) -> None:
        self._stopped = True
        self._listener.close()


def _reset(sock: socket.socket) -> None:
    """Cut the connection; shutdown first, because a close alone does not wake the other pump's recv."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
