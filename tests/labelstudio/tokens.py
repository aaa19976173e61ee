"""Label Studio personal access tokens (JWTs) for tests: refresh and access tokens of a given lifetime."""
from __future__ import annotations

import os
import time

import jwt


def make_jwt(token_type, seconds=3600):
    return jwt.encode({"token_type": token_type, "exp": int(time.time()) + seconds, "user_id": 1, "jti": os.urandom(8).hex()}, "a-test-signing-key-of-at-least-32-bytes", algorithm="HS256")
