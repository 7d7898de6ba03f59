"""Waspada's four services: intake, verification, referral, audit."""
