"""Loopback fakes of the services gemcord talks to (Gemini, Discord), for tests and benchmarks."""
