"""Paste filter for the test Nova API: X-Auth-Token -> Keystone-style identity headers.

Nova 34 has no noauth strategy any more. In our api-paste.ini this filter takes the place of
keystonemiddleware's `authtoken`, in front of Nova's own `keystonecontext`, so a plain openstacksdk
client with `auth_type: admin_token` works without Keystone:

    X-Auth-Token: admin                    -> user admin in the admin project, roles admin,member,reader
    X-Auth-Token: <user>:<project>         -> that user in that project, roles member,reader
    X-Auth-Token: <user>:<project>:<roles> -> that user in that project with exactly those roles (comma-separated,
                                              as Keystone would list them after expanding implied roles)

The third form lets tests check policy over HTTP: Nova's own `keystonecontext` and policy engine decide.

LOOPBACK TESTING ONLY: anyone who can reach the port is admin.
"""

import os

ADMIN_PROJECT = os.environ.get("CAPACITYD_AIO_ADMIN_PROJECT", "adm1n000000000000000000000000000")


class TokenToIdentity:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        token = environ.get("HTTP_X_AUTH_TOKEN")
        if not token:
            body = (
                b'{"error": {"code": 401, "title": "Unauthorized", '
                b'"message": "The request you have made requires authentication."}}'
            )
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            start_response("401 Unauthorized", headers)
            return [body]
        user, _, rest = token.partition(":")
        project, has_roles, roles = rest.partition(":")
        environ["HTTP_X_USER_ID"] = user
        environ["HTTP_X_PROJECT_ID"] = project or ADMIN_PROJECT
        if has_roles:
            environ["HTTP_X_ROLES"] = roles
        else:
            environ["HTTP_X_ROLES"] = "admin,member,reader" if user == "admin" else "member,reader"
        return self.app(environ, start_response)


def filter_factory(global_conf, **local_conf):
    return TokenToIdentity
