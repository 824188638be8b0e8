"""Pieces below both the methods and the trainer: mesh and sharding rules, schedules, and the
per-step context a method's functions receive. Nothing here imports methods, train or eval."""
