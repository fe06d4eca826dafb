"""Alarms: rules as data, evaluation as batches arrive, lifecycle, storage and notifications."""
