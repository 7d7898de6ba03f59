"""Identity: accounts, sign-in with a second factor, sessions, and the only key that can mint access tokens."""
