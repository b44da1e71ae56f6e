"""A real redis-server for the test scripts: on a free loopback port, and known to be itself.

A free port can be taken by another process before redis-server binds it; then that redis-server exits and
another port is tried, and a stranger answering on the port is never mistaken for it (INFO's process_id
must be the child's).
"""
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, timeout: float = 20):
        self.timeout = timeout
        self.process = None
        for _ in range(5):
            self.port = free_port()
            self.launch()
            if self.answering():
                return
        raise RuntimeError("redis-server could not bind a port in 5 tries")

    def arguments(self) -> list:
        """redis-server's arguments for `self.port` (subclasses add theirs)."""
        return ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]

    def launch(self):
        # No output shared with the script: a redis-server left behind must not hold its pipes open.
        self.process = subprocess.Popen(["redis-server", *self.arguments()], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)

    def answering(self) -> bool:
        """True once it answers on its port as itself, False if it exited (the port was taken)."""
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if f"process_id:{self.process.pid}\r\n".encode() in self.command("INFO", "server"):
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start within {self.timeout} s")

    def restart(self):
        """Starts it again on the same port (its clients know it there)."""
        self.launch()
        if not self.answering():
            raise RuntimeError(f"redis-server could not take port {self.port} again")

    def command(self, *args: str) -> bytes:
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(payload.encode())
            return s.recv(65536)

    def kill(self):
        self.process.kill()
        self.process.wait()
