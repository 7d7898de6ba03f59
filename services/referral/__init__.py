"""Referral: verified cases are routed to the units that act on them, which acknowledge, accept, update and close."""
