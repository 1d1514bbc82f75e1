"""A stand-in for the Hugging Face Hub on 127.0.0.1 (http.server in a thread), as the download tests need it:
/api/models/REPO/revision/main lists the files; /REPO/resolve/main/FILE answers small files itself and redirects LFS
files (*.safetensors, *.json under `lfs`) to /cdn/FILE with X-Linked-Size and X-Linked-Etag (the sha256), as the
Hub does; /cdn serves HTTP Range requests (with an ETag, honouring If-Range: a changed file is sent whole) and can cut a response
short to simulate a dropped connection, or cap the bytes it sends for a Range (as some servers do; the Content-Range
says so). `files` may be changed between requests (a file changed on the server)."""
import contextlib
import hashlib
import http.server
import json
import threading


@contextlib.contextmanager
def serve(repo, files, token=None, sha256=None, cut=None, cap=None):
    """files {name: bytes}; token: required on the Hub (not the CDN); sha256 {name: hex} overrides the true hashes;
    cut {name: n}: the first GET of the CDN file sends n bytes and closes; cap: a Range request gets at most cap
    bytes. Yields (url, log of requests)."""
    log = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, code, body=b"", headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            log.append((self.command, self.path, self.headers.get("Range"), self.headers.get("Authorization")))
            prefix = f"/{repo}/resolve/main/"
            if not self.path.startswith("/cdn/") and token and self.headers.get("Authorization") != f"Bearer {token}":
                return self.send(401, b"gated")
            if self.path == f"/api/models/{repo}/revision/main":
                return self.send(200, json.dumps({"siblings": [{"rfilename": f} for f in files]}).encode())
            if self.path.startswith(prefix) and self.path[len(prefix):] in files:
                name = self.path[len(prefix):]
                body = files[name]
                if name.endswith(".safetensors"):  # LFS: a redirect carrying the size and sha256
                    sha = (sha256 or {}).get(name, hashlib.sha256(body).hexdigest())
                    return self.send(302, headers=[("Location", f"/cdn/{name}"), ("X-Linked-Size", str(len(body))),
                                                   ("X-Linked-Etag", f'"{sha}"'), ("Content-Length", "0")])
                return self.send(200, body, [("Content-Length", str(len(body))), ("ETag", '"0123abcd"')])
            if self.path.startswith("/cdn/") and self.path[5:] in files:
                name, body = self.path[5:], files[self.path[5:]]
                etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                if self.headers.get("If-Range") not in (None, etag):
                    start = 0  # the file changed since the client's partial copy: send it whole (RFC 9110)
                code, part = (206, body[start:start + (cap or len(body))]) if start else (200, body)
                headers = [("Content-Length", str(len(part))), ("ETag", etag)]
                if start:
                    headers.append(("Content-Range", f"bytes {start}-{start + len(part) - 1}/{len(body)}"))
                if cut and name in cut and self.command == "GET":
                    n = cut.pop(name)  # once: the next request gets everything
                    self.send_response(code)
                    for k, v in headers:
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(part[:n])
                    self.close_connection = True
                    return
                return self.send(code, part, headers)
            self.send(404, b"not found")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
