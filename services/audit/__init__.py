"""Audit: every case event, in order, in a hash-chained trail that supervisors and courts can rely on."""
