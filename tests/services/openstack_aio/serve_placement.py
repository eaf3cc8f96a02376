"""Serve the REAL Placement WSGI app on loopback (run with the OpenStack venv's python).

usage: serve_placement.py CONFIG_DIR PORT PARENT_PID

Prints one 'ready' line, then serves until the parent process is gone (checked every second) or
it is killed. Test use only: noauth2, anyone who reaches the port is admin. A token
`<user>:<project>:<roles>` (the test Nova's convention, noauth_filter.py) becomes Placement's own noauth2
token `<user>:<project>` with exactly those roles (its `X-Roles`), so Placement's policy engine decides.
"""

import os
import sys
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

config_dir, port, parent = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.environ["OS_PLACEMENT_CONFIG_DIR"] = config_dir
started = time.perf_counter()

from placement.wsgi.api import application  # noqa: E402 - reads placement.conf from the env above


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class ReusingServer(WSGIServer):
    allow_reuse_address = True


def watch_parent():
    while True:
        time.sleep(1)
        if os.getppid() != parent:
            os._exit(0)


threading.Thread(target=watch_parent, daemon=True).start()


def roles_from_token(environ, start_response):
    user, _, rest = environ.get("HTTP_X_AUTH_TOKEN", "").partition(":")
    project, has_roles, roles = rest.partition(":")
    if has_roles:
        environ["HTTP_X_AUTH_TOKEN"] = f"{user}:{project}"
        environ["HTTP_X_ROLES"] = roles
    else:
        environ.pop("HTTP_X_ROLES", None)  # a client cannot pick its roles with a header
    return application(environ, start_response)


httpd = make_server("127.0.0.1", port, roles_from_token, server_class=ReusingServer, handler_class=QuietHandler)
print(f"placement ready on 127.0.0.1:{port} after {time.perf_counter() - started:.1f}s", flush=True)
httpd.serve_forever()
