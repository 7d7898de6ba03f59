"""The web service: server-rendered pages over the other services' public HTTP APIs."""
