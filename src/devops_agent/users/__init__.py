"""Users' accounts: who may sign in, made one way whoever makes them.

* ``users``: the rules of a username, an email and a password, and ``create_user``,
  the one way a user is made (registration on the web, ``devops-agent create-admin``):
  the row and its Free credit account, in the caller's transaction;
* ``passwords``: Argon2id hashing, off the event loop;
* ``admins``: making an administrator, or promoting a user (the CLI's ``create-admin``).

It sits above ``billing`` (a new user gets a credit account) and below ``web`` and
``cli``, which both call it; it imports neither.
"""

from __future__ import annotations

from devops_agent.users.passwords import Passwords
from devops_agent.users.registration import UserExists, create_user, user_named

__all__ = ["Passwords", "UserExists", "create_user", "user_named"]
