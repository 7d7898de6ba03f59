"""Waspada's shared package: event contracts, topics, settings, logging, storage and delivery helpers, auth."""
