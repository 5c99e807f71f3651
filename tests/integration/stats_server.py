"""A /stats server on 127.0.0.1 (ephemeral port) that answers a scripted sequence of responses.

Each request takes the next step; the last step repeats. A step is a dict:
  body (str/bytes), status (200), content_type ('text/plain'), delay (s before answering),
  fault: None | 'close' (no answer) | 'truncate' (announce the full length, send half) |
         'no_length' (no Content-Length, close after the body) | 'raw' (send ``body`` as is, no HTTP) |
         'trickle' (send the body one byte every ``trickle_s``) | 'stream' (no Content-Length,
         send ``stream_bytes`` of filler).
Written for tests only; everything is bounded (socket timeouts, a stop event).
"""
import socket
import socketserver
import threading
import time


def free_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _read_request(conn):
    data = b''
    while b'\r\n\r\n' not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    line = data.split(b'\r\n', 1)[0].decode('latin-1')
    parts = line.split(' ')
    return parts[1] if len(parts) > 1 else ''


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        server = self.server.owner
        conn = self.request
        conn.settimeout(5)
        try:
            path = _read_request(conn)
            step = server.next_step(path)
            self._answer(conn, step, server.stop_event)
        except OSError:
            pass  # the client gave up (timeout, too large): expected in fault tests

    @staticmethod
    def _answer(conn, step, stop_event):
        if step.get('delay'):
            stop_event.wait(step['delay'])
        fault = step.get('fault')
        if fault == 'close':
            return
        body = step.get('body', b'')
        if isinstance(body, str):
            body = body.encode('utf-8')
        if fault == 'raw':
            conn.sendall(body)
            return
        status = step.get('status', 200)
        head = ['HTTP/1.1 %d %s' % (status, 'OK' if status == 200 else 'Status'),
                'Content-Type: %s' % step.get('content_type', 'text/plain'), 'Connection: close']
        if fault not in ('no_length', 'stream'):
            head.append('Content-Length: %d' % len(body))
        conn.sendall(('\r\n'.join(head) + '\r\n\r\n').encode('latin-1'))
        if fault == 'truncate':
            conn.sendall(body[:len(body) // 2])
        elif fault == 'trickle':
            for i in range(len(body)):
                if stop_event.wait(step.get('trickle_s', 0.1)):
                    return
                conn.sendall(body[i:i + 1])
        elif fault == 'stream':
            filler = b'x' * 65536
            for _chunk in range(step['stream_bytes'] // len(filler)):
                if stop_event.is_set():
                    return
                conn.sendall(filler)
        else:
            conn.sendall(body)


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class StatsServer:
    def __init__(self, steps):
        if not steps:
            raise ValueError('at least one step')
        self.steps = list(steps)
        self.requests = []
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._server = _TCPServer(('127.0.0.1', 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={'poll_interval': 0.05},
                                        daemon=True)

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def url(self):
        return 'http://127.0.0.1:%d/stats' % self.port

    def next_step(self, path):
        with self._lock:
            index = min(len(self.requests), len(self.steps) - 1)
            self.requests.append((time.monotonic(), path))
            return self.steps[index]

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.stop_event.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
