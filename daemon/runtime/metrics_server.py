"""The Prometheus endpoint's HTTP server: a bounded number of client threads, each with a
socket timeout.

prometheus_client's own ``start_http_server`` starts one thread per connection and never
times a connection out: 300 idle connections held 325 threads (issue 10). Here at most
``MAX_CLIENTS`` connections are served at once (more are closed at once, and counted), and
a client that sends nothing for ``CLIENT_TIMEOUT_S`` is dropped. A scrape takes
milliseconds, so neither bound is felt by Prometheus.
"""
from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

MAX_CLIENTS = 8
CLIENT_TIMEOUT_S = 5.0


class _QuietHandler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT_S  # StreamRequestHandler.setup() puts it on the socket

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        """Requests are not logged (the metrics themselves say what the daemon does)."""


class BoundedWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def __init__(self, *args, **kw) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.refused = 0  # connections closed because MAX_CLIENTS were being served
        super().__init__(*args, **kw)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def handle_error(self, request, client_address) -> None:
        """A client that timed out or went away is no error worth a traceback on stderr."""
        import sys

        if not isinstance(sys.exc_info()[1], (TimeoutError, ConnectionError)):
            super().handle_error(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def serve(app, listen: str, port: int) -> tuple[BoundedWSGIServer, threading.Thread]:
    """Bind ``listen:port`` (IPv6 when the address is one) and serve ``app`` in a thread."""
    family = socket.AF_INET6 if ":" in listen else socket.AF_INET

    class Server(BoundedWSGIServer):
        address_family = family

    httpd = make_server(listen, port, app, Server, handler_class=_QuietHandler)
    t = threading.Thread(target=httpd.serve_forever, name="malsensor-metrics", daemon=True)
    t.start()
    return httpd, t
