"""Settings for the in-process tests: the hub's own, with what only tests may cut short.

Real-process tests (tests/reliability, tests/e2e) start hubs with the production settings.
"""

from hivemind_web.settings import *  # noqa: F403

# Hashing a password the production way costs ~0.3 s; the tests create many users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
