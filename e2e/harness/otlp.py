"""A bare OTLP/HTTP receiver for the tests: keeps every body POSTed to it (protobuf, not
decoded: the tests look for ids and names in the bytes)."""

import http.server
import threading


class OtlpSink:
    def __init__(self, host="127.0.0.1"):
        bodies = self.bodies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                bodies.append((self.path, self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def traces(self):
        """The bodies POSTed to /v1/traces."""
        return [body for path, body in self.bodies if path == "/v1/traces"]

    def close(self):
        self.server.shutdown()
