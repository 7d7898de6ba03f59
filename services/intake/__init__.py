"""Intake: reporters file what they saw; every accepted report becomes `case.reported`."""
