"""Verification: screening scores each report; an immigration officer verifies, rejects or asks for more."""
